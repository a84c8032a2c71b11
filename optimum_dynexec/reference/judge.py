"""A small CNN Fashion-MNIST classifier that judges generated images: their class, and features for a FID.

from optimum_dynexec.reference.judge import prepare_judge, load_judge

judge = load_judge(prepare_judge())
judge.predict(pipe(prompts, output_type="np").images)  # int64 [N] class ids
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from optimum_dynexec.reference.fashion_mnist import CLASS_NAMES, IMAGE_SIZE, load_fashion_mnist
from optimum_dynexec.training.loop import TrainingLoop, batch_indices
from optimum_dynexec.utils import building, cache_dir, set_seed

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "judge.pt"
CONFIG_NAME = "judge_config.json"


@dataclass
class JudgeConfig:
    """Settings of the judge classifier; validated on construction."""

    width: int = 16
    feature_dim: int = 128
    epochs: float = 3.0
    batch_size: int = 128
    learning_rate: float = 2e-3
    max_train_samples: int | None = None
    seed: int = 0

    def __post_init__(self):
        if min(self.width, self.feature_dim, self.batch_size) <= 0 or self.epochs <= 0 or self.learning_rate <= 0:
            raise ValueError(f"Judge sizes, epochs and learning rate must be positive, got {self}")

    @classmethod
    def tiny(cls) -> JudgeConfig:
        """A judge that trains in a few seconds (for tests; its accuracy is meaningless)."""
        return cls(width=8, feature_dim=16, epochs=1.0, max_train_samples=512)

    def short_name(self) -> str:
        """The settings in a folder name."""
        n = f"-n{self.max_train_samples}" if self.max_train_samples else ""
        return f"w{self.width}-f{self.feature_dim}-e{self.epochs:g}{n}-s{self.seed}"


class JudgeNet(nn.Module):
    """Three convolutions with two poolings (28 -> 14 -> 7), a feature layer and a linear classifier."""

    def __init__(self, width: int = 32, feature_dim: int = 128, num_classes: int = len(CLASS_NAMES)):
        super().__init__()

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *conv(1, width),
            nn.MaxPool2d(2),
            *conv(width, 2 * width),
            *conv(2 * width, 2 * width),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.feature = nn.Sequential(nn.Linear(2 * width * 7 * 7, feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def to_judge_input(images) -> torch.Tensor:
    """Converts images to the judge's input: `float32 [N, 1, 28, 28]`, normalized to [-1, 1].

    Args:
        images: a list of PIL images, or a numpy array / torch tensor `[N, H, W]` or `[N, H, W, C]` (C = 1, 3 or 4),
            either `uint8` in [0, 255] or float in [0, 1] (the pipeline's `output_type="np"`). Colour is averaged to
            grey; 32x32 pipeline images are center-cropped to 28x28, other sizes resized.

    Returns:
        `torch.Tensor`: the batch.

    Raises:
        `ValueError`: for an empty batch or an unsupported shape.
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("The judge needs at least one image.")
        images = np.stack([np.asarray(im.convert("L") if hasattr(im, "convert") else im) for im in images])
    x = torch.as_tensor(np.asarray(images))
    is_float = x.dtype.is_floating_point
    x = x.float() if is_float else x.float() / 255.0
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4):
        x = x[..., :3].mean(-1)
    if x.ndim != 3 or x.shape[0] == 0:
        raise ValueError(f"Expected images [N, H, W] or [N, H, W, C], got shape {tuple(x.shape)}.")
    x = x[:, None]
    h, w = x.shape[-2:]
    if (h, w) == (IMAGE_SIZE + 4, IMAGE_SIZE + 4):
        x = x[..., 2:-2, 2:-2]
    elif (h, w) != (IMAGE_SIZE, IMAGE_SIZE):
        x = torch.nn.functional.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True)
    return x.clamp(0, 1) * 2.0 - 1.0


class Judge:
    """A trained judge classifier in eval mode.

    Args:
        model (`JudgeNet`): the network.
        metrics (`dict`): its training metrics (`test_accuracy`, ...).
    """

    def __init__(self, model: JudgeNet, metrics: dict | None = None):
        self.model = model.eval()
        self.metrics = metrics or {}

    @torch.no_grad()
    def _run(self, images, fn, batch_size: int = 512) -> np.ndarray:
        x = to_judge_input(images)
        return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()

    def logits(self, images) -> np.ndarray:
        """Class logits `float32 [N, 10]` (see `to_judge_input` for the accepted images)."""
        return self._run(images, self.model)

    def predict(self, images) -> np.ndarray:
        """Predicted class ids `int64 [N]` (see `to_judge_input` for the accepted images)."""
        return self.logits(images).argmax(-1).astype(np.int64)

    def features(self, images) -> np.ndarray:
        """Penultimate-layer features `float32 [N, feature_dim]`, e.g. for `image_metrics.frechet_distance`."""
        return self._run(images, self.model.features)


def judge_dir(config: JudgeConfig | None = None) -> Path:
    """Where `prepare_judge` puts the judge for these settings (it may not exist yet)."""
    return cache_dir("models") / f"fashion-judge-{(config or JudgeConfig()).short_name()}"


def train_judge(out: Path, config: JudgeConfig) -> Path:
    """Trains the judge on the Fashion-MNIST train split and writes `judge.pt`, `judge_config.json` and
    `metrics.json` (with the test accuracy) into `out`.

    The loop is the library's `TrainingLoop` (AdamW, linear warm-up over 30% of the steps, then cosine decay).

    Args:
        out (`Path`): the output folder (created).
        config (`JudgeConfig`): the settings.

    Returns:
        `Path`: `out`.

    Raises:
        `FileNotFoundError`: when the Fashion-MNIST data is not installed.
    """
    start_time = time.perf_counter()
    set_seed(config.seed)
    images, labels = load_fashion_mnist("train")
    if config.max_train_samples:
        images, labels = images[: config.max_train_samples], labels[: config.max_train_samples]
    x, y = to_judge_input(images), torch.as_tensor(labels)
    model = JudgeNet(config.width, config.feature_dim)
    steps = max(1, round(config.epochs * max(1, len(x) // config.batch_size)))

    def loss_fn(step: int) -> torch.Tensor:
        idx = batch_indices(step, len(x), config.batch_size, config.seed)
        shift = torch.randint(-2, 3, (2,)).tolist()  # small random translations
        return nn.functional.cross_entropy(model(torch.roll(x[idx], shifts=shift, dims=(2, 3))), y[idx])

    loop = TrainingLoop(
        model,
        max_steps=steps,
        learning_rate=config.learning_rate,
        warmup_steps=int(0.3 * steps),
        weight_decay=1e-4,
        max_grad_norm=None,
        seed=config.seed,
        desc="training judge",
    )
    loop.run(loss_fn)
    judge = Judge(model)
    test_images, test_labels = load_fashion_mnist("test")
    accuracy = float((judge.predict(test_images) == test_labels).mean())
    metrics = {
        "test_accuracy": accuracy,
        "train_seconds": round(time.perf_counter() - start_time, 1),
        "steps": steps,
        "config": asdict(config),
    }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / WEIGHTS_NAME)
    (out / CONFIG_NAME).write_text(json.dumps(asdict(config), indent=2))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    logger.info("trained the Fashion-MNIST judge in %.0f s: test accuracy %.4f", metrics["train_seconds"], accuracy)
    return out


def prepare_judge(config: JudgeConfig | None = None) -> Path:
    """Trains the judge once into `cache_dir("models") / "fashion-judge-<settings>"` and returns the folder.

    Args:
        config (`JudgeConfig`, *optional*): the settings (default: `JudgeConfig()`, about 1-2 minutes on 2 cores).

    Returns:
        `Path`: the folder, for `load_judge`.
    """
    config = config or JudgeConfig()
    out = judge_dir(config)
    if (out / "metrics.json").exists():
        return out
    with building(out) as tmp:
        train_judge(tmp, config)
    return out


def load_judge(path: str | Path) -> Judge:
    """Loads a judge written by `prepare_judge` / `train_judge`.

    Raises:
        `FileNotFoundError`: when `path` holds no judge.
    """
    path = Path(path)
    if not (path / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"No judge in {path}; run `prepare_judge()` first.")
    config = JudgeConfig(**json.loads((path / CONFIG_NAME).read_text()))
    model = JudgeNet(config.width, config.feature_dim)
    model.load_state_dict(torch.load(path / WEIGHTS_NAME, weights_only=True))
    metrics = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").exists() else {}
    return Judge(model, metrics)
