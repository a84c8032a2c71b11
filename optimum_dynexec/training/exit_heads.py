"""Exit heads for a fine-tuned encoder classifier, trained by self-distillation with the backbone frozen.

Each head reads the attention-masked mean of its layer's token states (a [CLS] probe on early layers is near chance,
the masked mean is not) and learns the final classifier's probabilities, so unlabelled text suffices; when labels
are given, a cross-entropy term is mixed in.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..configuration import HEADS_CONFIG, validate_exit_layers
from ..data import TextDataset
from ..utils import set_seed
from .loop import TrainingLoop, batch_indices

logger = logging.getLogger(__name__)

HEADS_WEIGHTS = "exit_heads.safetensors"


def masked_mean(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states `(batch, seq, hidden)` over the tokens the mask `(batch, seq)` keeps."""
    mask = attention_mask.to(hidden_states.dtype).unsqueeze(-1)
    return (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class ExitHead(nn.Module):
    """Masked mean pooling, then dense -> tanh -> linear, like BERT's pooler and classifier."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, num_labels)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits `(batch, num_labels)` from pooled states `(batch, hidden)`."""
        return self.out(self.dropout(torch.tanh(self.dense(pooled))))

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classify(masked_mean(hidden_states, attention_mask))


class ExitHeads(nn.ModuleDict):
    """One `ExitHead` per exit layer, keyed by the 1-based layer number."""

    def __init__(self, exit_layers: list[int], hidden_size: int, num_labels: int):
        super().__init__({str(layer): ExitHead(hidden_size, num_labels) for layer in exit_layers})
        self.exit_layers = list(exit_layers)
        self.hidden_size = hidden_size
        self.num_labels = num_labels

    def head(self, layer: int) -> ExitHead:
        return self[str(layer)]

    def select(self, layers: list[int]) -> "ExitHeads":
        """The heads of `layers` only (shared, not copied)."""
        missing = sorted(set(layers) - set(self.exit_layers))
        if missing:
            raise ValueError(f"No exit heads for layers {missing}; these heads cover {self.exit_layers}.")
        selected = ExitHeads(list(layers), self.hidden_size, self.num_labels)
        for layer in layers:
            selected[str(layer)] = self.head(layer)
        return selected

    def save_pretrained(self, folder: str | Path) -> None:
        """Writes `exit_heads.safetensors` and `exit_heads.json` into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / HEADS_WEIGHTS)
        meta = {"exit_layers": self.exit_layers, "hidden_size": self.hidden_size, "num_labels": self.num_labels}
        (folder / HEADS_CONFIG).write_text(json.dumps(meta, indent=2))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "ExitHeads":
        """Loads heads saved by `save_pretrained`.

        Raises:
            `FileNotFoundError`: when `folder` holds no exit heads.
        """
        folder = Path(folder)
        if not (folder / HEADS_CONFIG).is_file():
            raise FileNotFoundError(f"{folder} holds no exit heads ({HEADS_CONFIG} is missing).")
        heads = cls(**json.loads((folder / HEADS_CONFIG).read_text()))
        heads.load_state_dict(load_file(folder / HEADS_WEIGHTS))
        return heads.eval()


@dataclass
class ExitHeadTrainingConfig:
    """Hyper-parameters of `train_exit_heads`; validated on construction.

    Args:
        epochs (`int`): passes over the cached features (an epoch is `len(data) // batch_size` steps).
        learning_rate (`float`), batch_size (`int`), weight_decay (`float`): AdamW settings (cosine decay to 0).
        temperature (`float`): softening of teacher and student in the distillation term.
        label_weight (`float`): weight of the cross-entropy on labels, in `[0, 1]`, used only when labels are given.
        max_length (`int`): tokenizer truncation.
        seed (`int`): seeds initialisation and shuffling.
    """

    epochs: int = 8
    learning_rate: float = 2e-3
    batch_size: int = 128
    weight_decay: float = 0.01
    temperature: float = 2.0
    label_weight: float = 0.3
    max_length: int = 128
    seed: int = 0

    def __post_init__(self):
        if self.epochs <= 0 or self.learning_rate <= 0 or self.batch_size <= 0 or self.temperature <= 0:
            raise ValueError(f"epochs, learning_rate, batch_size and temperature must be positive: {self}")
        if not 0.0 <= self.label_weight <= 1.0:
            raise ValueError(f"label_weight must be in [0, 1], got {self.label_weight}.")

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def collect_layer_features(
    model: nn.Module,
    tokenizer,
    texts: list[str],
    exit_layers: list[int],
    max_length: int = 128,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs the frozen classifier once and keeps what the heads need.

    Returns:
        `(pooled, teacher_logits)`: masked-mean states `(len(exit_layers), N, hidden)` after each exit layer and
        the final classifier's logits `(N, num_labels)`.
    """
    model.eval()
    pooled, teacher = [], []
    for i in tqdm(range(0, len(texts), batch_size), desc="encoding for exit heads"):
        enc = tokenizer(
            texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        accepted = inspect.signature(model.forward).parameters
        out = model(**{k: v for k, v in enc.items() if k in accepted}, output_hidden_states=True)
        pooled.append(torch.stack([masked_mean(out.hidden_states[k], enc["attention_mask"]) for k in exit_layers]))
        teacher.append(out.logits.float())
    return torch.cat(pooled, 1), torch.cat(teacher)


def train_exit_heads(
    model: nn.Module,
    tokenizer,
    data: TextDataset,
    exit_layers: list[int] | None = None,
    config: ExitHeadTrainingConfig | None = None,
) -> ExitHeads:
    """Attaches and trains an exit head after each of `exit_layers` of a fine-tuned classifier.

    The heads train together in one `TrainingLoop` (each on its own loss) on features computed once.

    Args:
        model (`PreTrainedModel`): the fine-tuned `AutoModelForSequenceClassification`; stays frozen.
        tokenizer: its tokenizer.
        data (`TextDataset`): training text; labels are optional.
        exit_layers (`list[int]`, *optional*): 1-based layers; every layer but the last by default.
        config (`ExitHeadTrainingConfig`, *optional*): hyper-parameters.

    Returns:
        `ExitHeads` in eval mode.

    Raises:
        `ValueError`: for invalid exit layers, empty text, or labels outside the model's label range.
    """
    config = config or ExitHeadTrainingConfig()
    num_layers = model.config.num_hidden_layers
    exit_layers = list(range(1, num_layers)) if exit_layers is None else list(exit_layers)
    validate_exit_layers(exit_layers, num_layers)
    if len(data) == 0:
        raise ValueError("Exit heads need some training text, got none.")
    num_labels = model.config.num_labels
    labels = None
    if data.labels is not None:
        labels = torch.tensor(data.labels)
        if labels.min() < 0 or labels.max() >= num_labels:
            raise ValueError(f"Labels must lie in [0, {num_labels - 1}] for this model, got {labels.unique()}.")
    set_seed(config.seed)  # the heads' initialisation
    for p in model.parameters():
        p.requires_grad_(False)
    pooled, teacher = collect_layer_features(model, tokenizer, data.texts, exit_layers, config.max_length)
    heads = ExitHeads(exit_layers, model.config.hidden_size, num_labels)
    soft_teacher = torch.softmax(teacher / config.temperature, -1)
    label_weight = config.label_weight if labels is not None else 0.0

    def loss_fn(step: int) -> torch.Tensor:
        """The heads' losses summed: each head's gradient comes from its own term only."""
        idx = torch.from_numpy(batch_indices(step, len(data), config.batch_size, config.seed))
        loss = torch.zeros(())
        for j, layer in enumerate(exit_layers):
            logits = heads.head(layer).classify(pooled[j, idx])
            log_student = torch.log_softmax(logits / config.temperature, -1)
            kl = nn.functional.kl_div(log_student, soft_teacher[idx], reduction="batchmean")
            loss = loss + (1 - label_weight) * config.temperature**2 * kl
            if label_weight:
                loss = loss + label_weight * nn.functional.cross_entropy(logits, labels[idx])
        return loss

    steps = config.epochs * max(1, len(data) // config.batch_size)
    loop = TrainingLoop(
        heads,
        max_steps=steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        max_grad_norm=None,
        seed=config.seed,
        desc="training exit heads",
    )
    loop.run(loss_fn)
    with torch.no_grad():
        for j, layer in enumerate(exit_layers):
            agree = (heads.head(layer).classify(pooled[j]).argmax(-1) == teacher.argmax(-1)).float().mean()
            logger.info("exit head after layer %d: %.4f training agreement with the final classifier", layer, agree)
    return heads.eval()
