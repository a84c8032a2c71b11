"""Typed dynexec configurations, validated on construction and round-tripped through `dynexec_config.json`.

Nothing else in the package reads or writes that file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

CONFIG_NAME = "dynexec_config.json"
HEADS_CONFIG = "exit_heads.json"  # trained exit heads saved beside a classifier (`training.exit_heads`)
EXIT_CRITERIA = ("confidence", "entropy")


class JsonConfig:
    """`dynexec_config.json` round trip shared by the technique configs (dataclasses)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"Unknown {cls.__name__} keys {sorted(unknown)}.")
        return cls(**data)

    def save(self, folder: str | Path) -> Path:
        """Writes `dynexec_config.json` into `folder` and returns its path."""
        path = Path(folder) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


@dataclass
class EarlyExitConfig(JsonConfig):
    """How an encoder classifier exits early.

    Args:
        num_hidden_layers (`int`): encoder depth of the full model.
        exit_layers (`list[int]`): 1-based layers after which an exit head runs, strictly increasing, each below
            `num_hidden_layers` (the last layer's own classifier always ends the model).
        threshold (`float`, defaults to 0.9): a sample exits once its score reaches it, in `[0, 1]`.
        criterion (`str`, defaults to `"confidence"`): the score: `"confidence"` is the head's top probability,
            `"entropy"` is one minus the normalised entropy of its probabilities.
        segments (`list[str]`): IR files (relative to the model folder) of the compiled segments, one per exit
            layer plus the last; empty until exported.
        target_agreement (`float`, *optional*): the agreement with the full model that calibration aimed at.
        calibration (`dict`, *optional*): what calibration measured (agreement, mean exit layer, sample count).
        quantization (`dict`, *optional*): how the segments were compressed (`quant_mode`, `weight_format`).

    Raises:
        `ValueError`: on any inconsistent value, naming it.
    """

    num_hidden_layers: int
    exit_layers: list[int]
    threshold: float = 0.9
    criterion: str = "confidence"
    segments: list[str] = field(default_factory=list)
    target_agreement: float | None = None
    calibration: dict | None = None
    quantization: dict | None = None
    technique: str = "early-exit"

    def __post_init__(self):
        self.exit_layers = [int(x) for x in self.exit_layers]
        if self.technique != "early-exit":
            raise ValueError(f"EarlyExitConfig has technique 'early-exit', got {self.technique!r}.")
        if self.num_hidden_layers < 2:
            raise ValueError(f"Early exit needs at least 2 encoder layers, the model has {self.num_hidden_layers}.")
        validate_exit_layers(self.exit_layers, self.num_hidden_layers)
        validate_threshold(self.threshold)
        if self.criterion not in EXIT_CRITERIA:
            raise ValueError(f"Unknown exit criterion {self.criterion!r}; choose one of {EXIT_CRITERIA}.")
        if self.segments and len(self.segments) != len(self.exit_layers) + 1:
            raise ValueError(
                f"{len(self.exit_layers)} exit layers need {len(self.exit_layers) + 1} segments, "
                f"got {len(self.segments)}."
            )
        if self.target_agreement is not None and not 0.0 < self.target_agreement <= 1.0:
            raise ValueError(f"target_agreement must be in (0, 1], got {self.target_agreement}.")

    @property
    def segment_layers(self) -> list[tuple[int, int]]:
        """The 0-based `[start, end)` encoder layers that each segment runs."""
        bounds = [0, *self.exit_layers, self.num_hidden_layers]
        return list(zip(bounds[:-1], bounds[1:]))


def validate_exit_layers(exit_layers: list[int], num_hidden_layers: int) -> None:
    """Raises `ValueError` unless `exit_layers` is a non-empty, strictly increasing list inside `[1, L-1]`."""
    if not exit_layers:
        raise ValueError("exit_layers is empty: give at least one layer to exit after.")
    if any(b <= a for a, b in zip(exit_layers, exit_layers[1:])):
        raise ValueError(f"exit_layers must be strictly increasing, got {exit_layers}.")
    if exit_layers[0] < 1 or exit_layers[-1] >= num_hidden_layers:
        raise ValueError(
            f"exit_layers must lie in [1, {num_hidden_layers - 1}] for a {num_hidden_layers}-layer encoder "
            f"(the last layer's classifier is always the final exit), got {exit_layers}."
        )


def validate_threshold(threshold: float) -> None:
    """Raises `ValueError` unless `threshold` is a number in `[0, 1]`."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"exit threshold must be a number in [0, 1], got {threshold!r}.")


LOOKAHEAD_SCHEDULES = ("constant", "heuristic", "heuristic_transient")


DRAFT_TYPES = ("model", "eagle")


@dataclass(frozen=True)
class LookaheadDefaults:
    """The lookahead a drafter starts with unless told otherwise (the fields of `SpeculativeConfig` it sets)."""

    num_assistant_tokens: int
    num_assistant_tokens_schedule: str
    assistant_confidence_threshold: float


# The one home of the drafters' defaults, used by `SpeculativeConfig`, `SpeculativeConfig.for_drafter`, the export
# API and the CLI alike; measured on SmolLM2-135M (benchmarks/). A draft model grows its lookahead on full acceptance
# and stops on low confidence; an EAGLE head is cheap per token and drafts a constant 3, confidence unchecked.
DRAFTER_DEFAULTS = {
    "model": LookaheadDefaults(
        num_assistant_tokens=5, num_assistant_tokens_schedule="heuristic", assistant_confidence_threshold=0.4
    ),
    "eagle": LookaheadDefaults(
        num_assistant_tokens=3, num_assistant_tokens_schedule="constant", assistant_confidence_threshold=0.0
    ),
}
PROMPT_LOOKUP_NUM_TOKENS = 5  # tokens copied per call when prompt lookup drafts alone


@dataclass
class SpeculativeConfig(JsonConfig):
    """How a causal LM speculates by default (transformers' own assisted-generation arguments).

    Args:
        draft (`str`, *optional*): subfolder holding the draft model; `None` drafts by prompt lookup.
        draft_type (`str`, defaults to `"model"`): `"model"`, a causal LM sharing the target's tokenizer, or
            `"eagle"`, an EAGLE head drafting from the target's hidden states (greedy decoding).
        num_assistant_tokens (`int`, defaults to 5): draft tokens per target call to start with.
        num_assistant_tokens_schedule (`str`, defaults to `"heuristic"`): `"constant"`, or `"heuristic"` (grow by 2
            after a full acceptance, shrink by 1 after a rejection), or `"heuristic_transient"` (the same, reset per
            call).
        assistant_confidence_threshold (`float`, defaults to 0.4): the draft stops proposing once its top
            probability falls below this, in `[0, 1)`; 0 disables the stop.
        prompt_lookup_num_tokens (`int`, *optional*): tokens copied from the prompt per call; with a draft too, prompt
            lookup proposes wherever the text repeats an n-gram and the draft elsewhere (greedy decoding).
        quantization (`dict`, *optional*): how target and draft were compressed (`quantization.describe`).

    The three lookahead defaults are a draft model's (`DRAFTER_DEFAULTS["model"]`); `SpeculativeConfig.for_drafter`
    gives each drafter its own (an EAGLE head's are `DRAFTER_DEFAULTS["eagle"]`).

    Raises:
        `ValueError`: on any inconsistent value, naming it.
    """

    draft: str | None = "draft"
    draft_type: str = "model"
    num_assistant_tokens: int = DRAFTER_DEFAULTS["model"].num_assistant_tokens
    num_assistant_tokens_schedule: str = DRAFTER_DEFAULTS["model"].num_assistant_tokens_schedule
    assistant_confidence_threshold: float = DRAFTER_DEFAULTS["model"].assistant_confidence_threshold
    prompt_lookup_num_tokens: int | None = None
    quantization: dict | None = None
    technique: str = "speculative"

    def __post_init__(self):
        if self.technique != "speculative":
            raise ValueError(f"SpeculativeConfig has technique 'speculative', got {self.technique!r}.")
        if (
            isinstance(self.num_assistant_tokens, bool)
            or not isinstance(self.num_assistant_tokens, int)
            or (self.num_assistant_tokens <= 0)
        ):
            raise ValueError(f"num_assistant_tokens must be a positive integer, got {self.num_assistant_tokens!r}.")
        if self.num_assistant_tokens_schedule not in LOOKAHEAD_SCHEDULES:
            raise ValueError(
                f"Unknown lookahead schedule {self.num_assistant_tokens_schedule!r}; choose one of "
                f"{LOOKAHEAD_SCHEDULES}."
            )
        if not 0.0 <= self.assistant_confidence_threshold < 1.0:
            raise ValueError(
                f"assistant_confidence_threshold must be in [0, 1), got {self.assistant_confidence_threshold}."
            )
        if self.prompt_lookup_num_tokens is not None and self.prompt_lookup_num_tokens <= 0:
            raise ValueError(f"prompt_lookup_num_tokens must be positive, got {self.prompt_lookup_num_tokens}.")
        if self.draft is None and self.prompt_lookup_num_tokens is None:
            raise ValueError("A speculative config needs a draft model or prompt_lookup_num_tokens.")
        if self.draft_type not in DRAFT_TYPES:
            raise ValueError(f"Unknown draft_type {self.draft_type!r}; choose one of {DRAFT_TYPES}.")

    @classmethod
    def for_drafter(
        cls,
        draft_type: str | None,
        num_assistant_tokens: int | None = None,
        num_assistant_tokens_schedule: str | None = None,
        assistant_confidence_threshold: float | None = None,
        prompt_lookup_num_tokens: int | None = None,
    ) -> "SpeculativeConfig":
        """The config of a drafter at its defaults (`DRAFTER_DEFAULTS`, `PROMPT_LOOKUP_NUM_TOKENS`), any argument
        given overriding its default. `export_speculative(config=None)` and `optimum-cli export dynexec` both build
        their config here, so the same drafter gets the same `dynexec_config.json`.

        Args:
            draft_type (`str`, *optional*): `"model"` (a draft causal LM), `"eagle"` (an EAGLE head), or `None` for
                prompt lookup alone (then `prompt_lookup_num_tokens` defaults to `PROMPT_LOOKUP_NUM_TOKENS`).
            num_assistant_tokens (`int`, *optional*), num_assistant_tokens_schedule (`str`, *optional*),
                assistant_confidence_threshold (`float`, *optional*): the draft's lookahead (see the class).
            prompt_lookup_num_tokens (`int`, *optional*): tokens copied from the prompt per call.

        Returns:
            `SpeculativeConfig`: the config, drafting from the `"draft"` subfolder unless by prompt lookup alone.

        Raises:
            `ValueError`: for an unknown draft type, a lookahead setting without a drafter, or an invalid value.
        """
        lookahead = {
            "num_assistant_tokens": num_assistant_tokens,
            "num_assistant_tokens_schedule": num_assistant_tokens_schedule,
            "assistant_confidence_threshold": assistant_confidence_threshold,
        }
        if draft_type is None:
            given = [name for name, value in lookahead.items() if value is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} set a draft's lookahead, but prompt lookup drafts alone here: give a draft "
                    "model, or drop them."
                )
            lookup = PROMPT_LOOKUP_NUM_TOKENS if prompt_lookup_num_tokens is None else prompt_lookup_num_tokens
            return cls(draft=None, prompt_lookup_num_tokens=lookup)
        if draft_type not in DRAFTER_DEFAULTS:
            raise ValueError(f"Unknown draft_type {draft_type!r}; choose one of {tuple(DRAFTER_DEFAULTS)}.")
        defaults = asdict(DRAFTER_DEFAULTS[draft_type])
        chosen = {name: defaults[name] if value is None else value for name, value in lookahead.items()}
        return cls(draft_type=draft_type, prompt_lookup_num_tokens=prompt_lookup_num_tokens, **chosen)

    def generate_kwargs(self) -> dict:
        """The `generate()` arguments this config stands for (the draft model itself aside)."""
        if self.draft is None:
            return {"prompt_lookup_num_tokens": self.prompt_lookup_num_tokens}
        kwargs = {
            "num_assistant_tokens": self.num_assistant_tokens,
            "num_assistant_tokens_schedule": self.num_assistant_tokens_schedule,
            "assistant_confidence_threshold": self.assistant_confidence_threshold,
        }
        if self.prompt_lookup_num_tokens is not None:
            kwargs["prompt_lookup_num_tokens"] = self.prompt_lookup_num_tokens
        return kwargs


STEP_POLICIES = ("predictor", "adaptive", "fixed")
STEP_BATCHING = ("group", "max")


@dataclass
class StepSaverConfig(JsonConfig):
    """How a diffusion pipeline chooses its number of denoising steps.

    Args:
        policy (`str`, defaults to `"predictor"`): `"predictor"` (StepSaver: a text model predicts each prompt's
            steps), `"adaptive"` (run up to `default_steps` and stop once the predicted clean latent stops changing)
            or `"fixed"` (always `default_steps`, as the plain pipeline).
        default_steps (`int`, defaults to 50): the fixed schedule of the plain pipeline, and the adaptive policy's
            maximum.
        predictor (`str`, *optional*): subfolder holding the step predictor (an OpenVINO text classifier over
            `step_buckets`); required by the `"predictor"` policy.
        step_buckets (`list[int]`): the step counts the predictor chooses between, strictly increasing.
        quantile (`float`, defaults to 0.5): the predictor picks the fewest steps whose predicted probability of
            being enough reaches this, in `(0, 1]`; higher is more conservative.
        batching (`str`, defaults to `"group"`): for a batch of prompts, `"group"` runs each predicted step count
            as its own sub-batch (every prompt gets its own steps), `"max"` runs the whole batch at the largest.
        tolerance (`float`, defaults to 0.05): adaptive stop once the relative change of the predicted clean latent
            between steps stays below this, in `(0, 1)`.
        patience (`int`, defaults to 2): consecutive steps under `tolerance` before stopping.
        min_steps (`int`, defaults to 4): the adaptive policy never stops before this many steps.
        training (`dict`, *optional*): how the predictor was trained and what it measured.
        quantization (`dict`, *optional*): how the UNet and the predictor were compressed.

    Raises:
        `ValueError`: on any inconsistent value, naming it.
    """

    policy: str = "predictor"
    default_steps: int = 50
    predictor: str | None = "step_predictor"
    step_buckets: list[int] = field(default_factory=list)
    quantile: float = 0.5
    batching: str = "group"
    tolerance: float = 0.05
    patience: int = 2
    min_steps: int = 4
    training: dict | None = None
    quantization: dict | None = None
    technique: str = "stepsaver"

    def __post_init__(self):
        if self.technique != "stepsaver":
            raise ValueError(f"StepSaverConfig has technique 'stepsaver', got {self.technique!r}.")
        validate_step_policy(self.policy)
        _check_positive_int("default_steps", self.default_steps)
        _check_positive_int("patience", self.patience)
        _check_positive_int("min_steps", self.min_steps)
        self.step_buckets = [int(b) for b in self.step_buckets]
        if any(b <= 0 for b in self.step_buckets) or any(
            b <= a for a, b in zip(self.step_buckets, self.step_buckets[1:])
        ):
            raise ValueError(f"step_buckets must be positive and strictly increasing, got {self.step_buckets}.")
        if self.policy == "predictor" and (self.predictor is None or not self.step_buckets):
            raise ValueError("The 'predictor' step policy needs a predictor subfolder and its step_buckets.")
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {self.quantile}.")
        if self.batching not in STEP_BATCHING:
            raise ValueError(f"Unknown batching {self.batching!r}; choose one of {STEP_BATCHING}.")
        validate_tolerance(self.tolerance)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def validate_step_policy(policy: str) -> None:
    """Raises `ValueError` unless `policy` is one of `STEP_POLICIES`."""
    if policy not in STEP_POLICIES:
        raise ValueError(f"Unknown step policy {policy!r}; choose one of {STEP_POLICIES}.")


def validate_tolerance(tolerance: float) -> None:
    """Raises `ValueError` unless the adaptive-stop tolerance is a number in `(0, 1)`."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance must be a number in (0, 1), got {tolerance!r}.")


TECHNIQUES = {"early-exit": EarlyExitConfig, "speculative": SpeculativeConfig, "stepsaver": StepSaverConfig}


def load_dynexec_config(folder: str | Path) -> EarlyExitConfig | SpeculativeConfig | StepSaverConfig | None:
    """Reads `dynexec_config.json` from a model folder, or returns `None` when the folder has none.

    Raises:
        `ValueError`: when the file is not a JSON object, names an unknown technique or holds invalid values (the
            message names the file).
    """
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}): re-export the model or repair the file.") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}.")
    technique = data.get("technique")
    if technique not in TECHNIQUES:
        raise ValueError(f"{path} names unknown technique {technique!r}; known: {sorted(TECHNIQUES)}.")
    return TECHNIQUES[technique].from_dict(data)


def config_for_model(model_id, expected: type, what: str, subfolder: str = ""):
    """The `dynexec_config.json` a model class reads on loading: the one place all three classes read it.

    Args:
        model_id: what `from_pretrained` was given (a folder holds the config; anything else has none).
        expected (`type`): the config class the loading class serves.
        what (`str`): what that class loads, for the error (e.g. `"an early-exit classifier"`).
        subfolder (`str`): `from_pretrained`'s subfolder.

    Returns:
        The config, or `None` when the model has none.

    Raises:
        `ValueError`: when the folder holds another technique's model, or a broken config (see
            `load_dynexec_config`).
    """
    folder = Path(model_id) / subfolder
    config = load_dynexec_config(folder) if folder.is_dir() else None
    if config is not None and not isinstance(config, expected):
        raise ValueError(f"{model_id} holds a {config.technique} model, not {what}.")
    return config
