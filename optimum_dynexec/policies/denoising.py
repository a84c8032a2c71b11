"""Step policies for diffusion pipelines: StepSaver's choice among step buckets, the labels it learns from, and the
training-free adaptive stop that rides on diffusers' `callback_on_step_end`."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from diffusers.callbacks import PipelineCallback

from ..configuration import validate_tolerance

logger = logging.getLogger(__name__)


def choose_steps(probabilities: np.ndarray, step_buckets: Sequence[int], quantile: float = 0.5) -> np.ndarray:
    """Per prompt, the fewest bucketed steps whose predicted probability of being enough reaches `quantile`.

    Args:
        probabilities (`np.ndarray`): `(num_prompts, num_buckets)` predicted probabilities that each bucket is the
            fewest sufficient step count (rows sum to 1).
        step_buckets (`Sequence[int]`): the step count of each bucket, increasing.
        quantile (`float`, defaults to 0.5): 0.5 takes the predicted median; higher values are more conservative.

    Returns:
        `np.ndarray`: `(num_prompts,)` step counts.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(step_buckets):
        raise ValueError(
            f"Expected probabilities of shape (num_prompts, {len(step_buckets)}), got {probabilities.shape}."
        )
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}.")
    cumulative = np.cumsum(probabilities, axis=1)
    # a tiny slack so that quantile=1 reaches the last bucket despite rounding
    index = np.argmax(cumulative >= quantile - 1e-9, axis=1)
    return np.asarray(step_buckets, dtype=np.int64)[index]


def fewest_sufficient_steps(step_grid: Sequence[int], acceptable: Sequence[bool]) -> int:
    """The fewest steps of `step_grid` from which every larger grid point is acceptable too.

    Requiring every larger count to pass (not only the first that does) keeps a lucky few-step image from labelling
    a prompt as easy. The largest grid point is the reference and always counts as acceptable.

    Args:
        step_grid (`Sequence[int]`): increasing step counts tried for one prompt and seed.
        acceptable (`Sequence[bool]`): whether the image at each count stayed within tolerance of the reference.
    """
    if len(step_grid) != len(acceptable) or not step_grid:
        raise ValueError("step_grid and acceptable must be non-empty and of the same length.")
    best = step_grid[-1]
    for steps, ok in zip(reversed(step_grid[:-1]), reversed(acceptable[:-1])):
        if not ok:
            break
        best = steps
    return int(best)


class AdaptiveStop(PipelineCallback):
    """Stops denoising once the predicted clean latent stops changing.

    The clean-latent estimate comes from one of two places. By default it is the scheduler's `pred_original_sample`
    (DDIM, DDPM, Euler, ...): run the pipeline inside `recording_clean_latents(pipe.scheduler, callback)`, which
    feeds it each step's estimate, and at the stop the callback replaces the latents with it. A pipeline that hands
    its callbacks the estimate itself (diffusers' LCM loop: `denoised`) names it in `clean_latents`; the callback then
    reads it there and, at the stop, holds that tensor at the estimate for the rest of the loop.

    At the stop it also sets the pipeline's `_interrupt`, so a loop that checks it (Stable Diffusion, SDXL) skips the
    remaining steps and decodes a real, clean image. A loop without that check keeps calling the callback, which then
    only holds the estimate (see `skipping_after_stop` to make those steps nearly free).

    Args:
        tolerance (`float`, defaults to 0.05): the relative change `||x0_t - x0_prev|| / ||x0_t||` (worst sample in
            the batch) under which a step counts as converged, in `(0, 1)`.
        patience (`int`, defaults to 2): consecutive converged steps needed to stop.
        min_steps (`int`, defaults to 4): never stop before this many steps.
        clean_latents (`str`, *optional*): the callback tensor input holding the pipeline's clean-latent estimate
            (`"denoised"` for LCM); `None` reads the scheduler's `pred_original_sample` and writes `latents`.

    Attributes:
        steps_used (`int`): the denoising steps run in the last call (up to the stop).
        stopped (`bool`): whether the last call stopped early.
        changes (`list[float]`): the relative change measured after each step of the last call.
    """

    def __init__(
        self, tolerance: float = 0.05, patience: int = 2, min_steps: int = 4, clean_latents: str | None = None
    ):
        super().__init__()
        validate_tolerance(tolerance)
        if patience < 1 or min_steps < 1:
            raise ValueError(f"patience and min_steps must be positive, got {patience} and {min_steps}.")
        self.tolerance, self.patience, self.min_steps = float(tolerance), int(patience), int(min_steps)
        self.clean_latents = clean_latents
        self.reset()

    @property
    def tensor_inputs(self) -> list[str]:
        """The one callback tensor this callback reads or writes: `clean_latents`, else `"latents"`."""
        return [self.clean_latents or "latents"]

    def reset(self) -> None:
        self.steps_used = 0
        self.stopped = False
        self.changes: list[float] = []
        self._previous: torch.Tensor | None = None
        self._current: torch.Tensor | None = None
        self._calm = 0

    def record(self, clean_latents: torch.Tensor) -> None:
        """Receives the scheduler's clean-latent estimate of the step that just ran."""
        self._current = clean_latents

    def callback_fn(self, pipeline, step_index: int, timestep, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        (name,) = self.tensor_inputs
        if self.stopped:  # a loop that does not check `_interrupt`: keep the estimate it stopped at
            callback_kwargs[name] = self._previous.to(callback_kwargs[name].dtype)
            return callback_kwargs
        self.steps_used = step_index + 1
        current = callback_kwargs[name] if self.clean_latents else self._current
        if current is None:
            raise RuntimeError(
                "AdaptiveStop saw no clean-latent estimate: run the pipeline inside `recording_clean_latents` with a "
                "scheduler whose step returns `pred_original_sample` (DDIM, DDPM, Euler, ...)."
            )
        if self._previous is not None:
            diff = (current - self._previous).flatten(1).norm(dim=1)
            scale = current.flatten(1).norm(dim=1).clamp_min(1e-8)
            change = float((diff / scale).max())
            self.changes.append(change)
            self._calm = self._calm + 1 if change < self.tolerance else 0
        self._previous = current
        if self._calm >= self.patience and self.steps_used >= self.min_steps:
            self.stopped = True
            pipeline._interrupt = True
            callback_kwargs[name] = current.to(callback_kwargs[name].dtype)
        return callback_kwargs


@contextmanager
def recording_clean_latents(scheduler, stop: AdaptiveStop) -> Iterator[None]:
    """Within the block, every `scheduler.step` also hands its `pred_original_sample` to `stop.record`.

    Raises:
        `ValueError`: when the scheduler does not predict clean latents (e.g. multistep DPM-Solver).
    """
    original = scheduler.step

    def step(*args, **kwargs):
        return_dict = kwargs.pop("return_dict", True)
        out = original(*args, return_dict=True, **kwargs)
        clean = getattr(out, "pred_original_sample", None)
        if clean is None:
            raise ValueError(
                f"{type(scheduler).__name__} does not return `pred_original_sample`, which the adaptive step policy "
                "needs; use a DDIM, DDPM or Euler scheduler."
            )
        stop.record(clean)
        return out if return_dict else out.to_tuple()

    stop.reset()
    with _replaced(scheduler, "step", step):
        yield


@contextmanager
def skipping_after_stop(model, stop: AdaptiveStop) -> Iterator[None]:
    """Within the block, once `stop` has stopped, calls of `model` return its last output without running it.

    For a denoising loop that does not check `_interrupt` (diffusers' LCM pipeline): its remaining steps then cost a
    scheduler step each instead of a UNet call, and `stop` holds the clean-latent estimate it stopped at.

    Args:
        model: the pipeline part the loop calls once per step (e.g. `pipe.unet`), called through its `forward`.
        stop (`AdaptiveStop`): the callback whose `stopped` flag ends the real calls.
    """
    original = model.forward
    last = None

    def forward(*args, **kwargs):
        nonlocal last
        if not (stop.stopped and last is not None):
            last = original(*args, **kwargs)
        return last

    stop.reset()
    with _replaced(model, "forward", forward):
        yield


@contextmanager
def _replaced(owner, name: str, replacement) -> Iterator[None]:
    """Within the block, `owner.<name>` is `replacement`; afterwards it is what it was (the instance's own attribute,
    or the class's method again)."""
    own = vars(owner).get(name, _MISSING)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        if own is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, own)


_MISSING = object()
