"""How much training every reference model gets: one typed budget per preset, and the cache keys it shapes.

`full` is what `make models`, `make demo` and `make bench` use (the README's numbers); `ci` trains the same recipes
for less (weaker drafters and predictor, the same mechanics) to keep a fresh-machine CI run short. The active preset
comes from `$OPTIMUM_DYNEXEC_PRESET` (default `full`), so `make models`, the tests and the benchmarks of one shell
agree on which cached models they mean; every folder name carries the settings that made it, so two presets never
share (or overwrite) a model.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields, replace

PRESET_ENV = "OPTIMUM_DYNEXEC_PRESET"


@dataclass(frozen=True)
class Budget:
    """The training budget of the reference models.

    Args:
        classifier_samples (`int`, defaults to 12000): training tweets the MiniLM sentiment classifier sees.
        classifier_epochs (`float`, defaults to 1): its passes over them.
        exit_head_texts (`int`, *optional*): training tweets the exit heads are distilled and calibrated on (default:
            the whole train split, 18,244 tweets).
        draft_minutes (`float`, defaults to 24): wall-time cap of the SmolLM2 draft distillation.
        draft_continuations (`int`, defaults to 256): prompts SmolLM2 continues greedily for its draft's data.
        eagle_minutes (`float`, defaults to 14): wall-time cap of the SmolLM2 EAGLE head training.
        eagle_windows (`int`, defaults to 800): the EAGLE head's training windows (4/5 text, 1/5 continuations).
        gemma_eagle_minutes (`float`, defaults to 14): wall-time cap of the Gemma-3-270M EAGLE head training.
        gemma_eagle_windows (`int`, defaults to 640): its training windows (4/5 text, 1/5 continuations; fewer than
            SmolLM2's: Gemma's features cost about three times as much).
        step_prompts (`int`, defaults to 300): training prompts of the Fashion-MNIST step predictor.
        step_seeds (`int`, defaults to 2): images labelled per prompt.
    """

    classifier_samples: int = 12000
    classifier_epochs: float = 1.0
    exit_head_texts: int | None = None
    draft_minutes: float = 24.0
    draft_continuations: int = 256
    eagle_minutes: float = 14.0
    eagle_windows: int = 800
    gemma_eagle_minutes: float = 14.0
    gemma_eagle_windows: int = 640
    step_prompts: int = 300
    step_seeds: int = 2

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) is not None and getattr(self, f.name) <= 0:
                raise ValueError(f"Budget.{f.name} must be positive, got {getattr(self, f.name)}.")

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Budget] = {
    "full": Budget(),
    "ci": Budget(
        classifier_samples=4000,
        exit_head_texts=5000,
        draft_minutes=4.0,
        draft_continuations=64,
        eagle_minutes=3.5,
        eagle_windows=250,
        gemma_eagle_minutes=3.5,
        gemma_eagle_windows=250,
        step_prompts=120,
        step_seeds=1,
    ),
}


def preset_name() -> str:
    """The active preset's name (`$OPTIMUM_DYNEXEC_PRESET`, default `full`).

    Raises:
        `ValueError`: when the variable names no preset.
    """
    name = os.environ.get(PRESET_ENV, "full") or "full"
    if name not in PRESETS:
        raise ValueError(f"${PRESET_ENV}={name!r} names no preset; choose one of {sorted(PRESETS)}.")
    return name


def active_budget(**overrides) -> Budget:
    """The active preset's budget, with `overrides` (e.g. `draft_minutes=2`) applied."""
    return replace(PRESETS[preset_name()], **{k: v for k, v in overrides.items() if v is not None})


def settings_key(settings: dict) -> str:
    """A short stable hash of everything that shapes a model (any change gives a new cache folder)."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
