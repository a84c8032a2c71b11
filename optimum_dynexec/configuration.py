"""Typed dynexec configurations, validated on construction and round-tripped through `dynexec_config.json`.

Nothing else in the package reads or writes that file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

CONFIG_NAME = "dynexec_config.json"
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


@dataclass
class SpeculativeConfig(JsonConfig):
    """How a causal LM speculates by default (transformers' own assisted-generation arguments).

    Args:
        draft (`str`, *optional*): subfolder holding the draft model; `None` drafts by prompt lookup.
        num_assistant_tokens (`int`, defaults to 5): draft tokens per target call to start with.
        num_assistant_tokens_schedule (`str`, defaults to `"heuristic"`): `"constant"`, or `"heuristic"` (grow by 2
            after a full acceptance, shrink by 1 after a rejection), or `"heuristic_transient"` (the same, reset per
            call).
        assistant_confidence_threshold (`float`, defaults to 0.4): the draft stops proposing once its top
            probability falls below this, in `[0, 1)`; 0 disables the stop.
        prompt_lookup_num_tokens (`int`, *optional*): tokens copied from the prompt per call when there is no draft.
        quantization (`dict`, *optional*): the weight formats of target and draft.

    Raises:
        `ValueError`: on any inconsistent value, naming it.
    """

    draft: str | None = "draft"
    num_assistant_tokens: int = 5
    num_assistant_tokens_schedule: str = "heuristic"
    assistant_confidence_threshold: float = 0.4
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
        if self.draft is not None and self.prompt_lookup_num_tokens is not None:
            raise ValueError("Give a draft model or prompt_lookup_num_tokens, not both.")

    def generate_kwargs(self) -> dict:
        """The `generate()` arguments this config stands for (the draft model itself aside)."""
        if self.draft is None:
            return {"prompt_lookup_num_tokens": self.prompt_lookup_num_tokens}
        return {
            "num_assistant_tokens": self.num_assistant_tokens,
            "num_assistant_tokens_schedule": self.num_assistant_tokens_schedule,
            "assistant_confidence_threshold": self.assistant_confidence_threshold,
        }


TECHNIQUES = {"early-exit": EarlyExitConfig, "speculative": SpeculativeConfig}


def load_dynexec_config(folder: str | Path) -> EarlyExitConfig | SpeculativeConfig | None:
    """Reads `dynexec_config.json` from a model folder, or returns `None` when the folder has none.

    Raises:
        `ValueError`: when the file names an unknown technique or holds invalid values.
    """
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    technique = data.get("technique")
    if technique not in TECHNIQUES:
        raise ValueError(f"{path} names unknown technique {technique!r}; known: {sorted(TECHNIQUES)}.")
    return TECHNIQUES[technique].from_dict(data)
