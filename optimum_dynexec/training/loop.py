"""The one training loop of the recipes: AdamW, gradient clipping, a transformers schedule, a progress bar, seeding,
a wall-time cap and one resumable checkpoint format. Whatever is recipe-specific (teacher passes, distillation losses,
EMA weights, ...) stays in the recipe's `loss_fn(step)`, `on_step_end` and `extras`:

    loop = TrainingLoop(model, max_steps=600, learning_rate=3e-4, warmup_steps=20, checkpoint=run / "state.pt")
    loop.run(lambda step: model(data[batch_indices(step, len(data), 8, seed=0)]).loss)
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..utils import set_seed

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "optimum_dynexec.training.loop/1"
# steps timed before a time-budgeted run fixes how many steps fit its budget
CALIBRATION_STEPS = 5


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """The sample indices (of `n`) of a 0-based optimizer step: a fresh seeded permutation every epoch of
    `max(1, n // batch_size)` batches. They depend on the step only, so a resumed run draws the same batches."""
    epoch, offset = divmod(step, max(1, n // batch_size))
    order = np.random.default_rng(seed * 1_000_003 + epoch).permutation(n)
    return order[offset * batch_size : (offset + 1) * batch_size]


class TrainingLoop:
    """A seeded, resumable AdamW loop over `loss_fn(step)`; construct it (it resumes from `checkpoint`), then `run`.

    The checkpoint is one `torch.save` file, written atomically: trainable weights and buffers, optimizer, scheduler,
    step, fixed step count, time spent, RNG states, losses, `extras`, and the settings a resumed run must share. A
    resumed run reproduces an uninterrupted one bit for bit.

    Args:
        model (`torch.nn.Module`): the model; its parameters with `requires_grad` are trained. Weight decay applies to
            matrices only (biases and norms get none, as in transformers' `Trainer`).
        max_steps (`int`): optimizer steps; the schedule spans them (or the steps that fit `max_minutes`).
        learning_rate (`float`): the peak learning rate.
        schedule (`str`, defaults to `"cosine"`): a `transformers.SchedulerType` name, built by
            `transformers.get_scheduler` (a `LambdaLR` schedule: `"linear"`, `"cosine"`, `"cosine_with_min_lr"`, ...).
        schedule_kwargs (`dict`, *optional*): its `scheduler_specific_kwargs`, e.g. `{"min_lr_rate": 0.1}`.
        warmup_steps (`int`, defaults to 0): linear warm-up steps.
        weight_decay (`float`, defaults to 0.0): AdamW weight decay of the matrices.
        max_grad_norm (`float`, *optional*, defaults to 1.0): gradient clipping (`None`: no clipping).
        max_minutes (`float`, *optional*): wall-time budget, summed over resumed runs. After `CALIBRATION_STEPS` timed
            steps the loop fixes how many steps fit (at most `max_steps`); the schedule spans them and the checkpoint
            keeps the number, so a resumed run follows the same schedule (the steps before the fix follow the
            `max_steps` schedule, usually in warm-up). The budget still stops a run that slows down.
        checkpoint (`str` or `Path`, *optional*): the checkpoint file, written every `save_every` steps and at the
            end; a loop that finds it resumes from it. A file of another format is replaced (with a warning).
        save_every (`int`, *optional*): checkpoint interval in steps.
        settings (`Mapping`, *optional*): the recipe's settings a resumed run must share; with the loop's own
            (learning rate, schedule, warm-up, weight decay, clipping, seed) they are the checkpoint's fingerprint.
        extras (`dict`, *optional*): recipe state saved in the checkpoint (EMA weights, metrics before training, ...);
            updated in place from the checkpoint on resume.
        seed (`int`, defaults to 0): seeds Python, NumPy and PyTorch when the loop starts from scratch (a resumed run
            restores the RNG states of its checkpoint instead).
        desc (`str`, defaults to `"training"`): the progress bar's label.

    Attributes:
        step (`int`): optimizer steps done; `resumed_from` is the step the run resumed from (0 for a fresh run).
        total_steps (`int`): the steps the loop runs to (`max_steps`, or fewer once fixed by `max_minutes`).
        losses (`list[float]`): the loss of every step, over resumed runs.
        elapsed (`float`): seconds spent in the loop, over resumed runs.
        stopped_by_time (`bool`): whether the time budget ended the run before `total_steps`.

    Raises:
        `ValueError`: for no trainable parameters, a checkpoint made with other settings (naming them), or a
            checkpoint holding other trainable weights than the model's.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        max_steps: int,
        learning_rate: float,
        schedule: str = "cosine",
        schedule_kwargs: Mapping[str, Any] | None = None,
        warmup_steps: int = 0,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = 1.0,
        max_minutes: float | None = None,
        checkpoint: str | Path | None = None,
        save_every: int | None = None,
        settings: Mapping[str, Any] | None = None,
        extras: dict[str, Any] | None = None,
        seed: int = 0,
        desc: str = "training",
    ) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("The model has no trainable parameters.")
        self.model, self.params, self.max_steps, self.max_grad_norm = model, params, max_steps, max_grad_norm
        self.seed, self.desc, self.save_every = seed, desc, save_every
        self.budget = None if max_minutes is None else max_minutes * 60
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=learning_rate)
        self._schedule = (schedule, warmup_steps, dict(schedule_kwargs or {}))
        own = dict(learning_rate=learning_rate, schedule=schedule, schedule_kwargs=self._schedule[2], seed=seed)
        own.update(warmup_steps=warmup_steps, weight_decay=weight_decay, max_grad_norm=max_grad_norm)
        self.settings = {**own, **(settings or {})}
        self.extras = extras if extras is not None else {}
        self.step = self.resumed_from = 0
        self.losses: list[float] = []
        self.elapsed, self.stopped_by_time, self.fixed, self._rng = 0.0, False, False, None
        self._set_schedule(max_steps)
        if self.checkpoint is not None and self.checkpoint.is_file():
            self._load()

    def _set_schedule(self, total: int, state: dict | None = None) -> None:
        """(Re)builds the schedule over `total` steps; with `state`, at its step, the learning rate following it."""
        name, warmup, kwargs = self._schedule
        self.scheduler = get_scheduler(
            name, self.optimizer, num_warmup_steps=warmup, num_training_steps=total, scheduler_specific_kwargs=kwargs
        )
        self.total_steps = total
        if state is not None:
            self.scheduler.load_state_dict(state)
            groups, scheduler = self.optimizer.param_groups, self.scheduler
            for group, base, factor in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas):
                group["lr"] = base * factor(scheduler.last_epoch)

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        """The model's state without its frozen parameters: trainable weights and buffers."""
        frozen = {n for n, p in self.model.named_parameters(remove_duplicate=False) if not p.requires_grad}
        return {k: v for k, v in self.model.state_dict().items() if k not in frozen}

    def _load(self) -> None:
        saved = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
            logger.warning(
                "%s is not a checkpoint of this training loop (an older format?): training starts over, replacing it",
                self.checkpoint,
            )
            return
        theirs = saved["settings"]
        changed = sorted(k for k in self.settings.keys() | theirs.keys() if self.settings.get(k) != theirs.get(k))
        if changed:
            detail = ", ".join(f"{k}: {theirs.get(k)!r} there, {self.settings.get(k)!r} now" for k in changed)
            raise ValueError(
                f"The checkpoint {self.checkpoint} was made with other settings ({detail}); "
                "use the same settings or another folder."
            )
        mine = set(self._trainable_state())
        if set(saved["weights"]) != mine:
            odd = sorted(set(saved["weights"]) ^ mine)[:5]
            raise ValueError(f"The checkpoint {self.checkpoint} holds other trainable weights than the model ({odd}).")
        self.model.load_state_dict(saved["weights"], strict=False)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.fixed = saved["total_steps"] is not None and self.budget is not None
        self._set_schedule(
            min(self.max_steps, saved["total_steps"]) if self.fixed else self.max_steps, saved["scheduler"]
        )
        self.step = self.resumed_from = saved["step"]
        self.elapsed, self.losses, self._rng = saved["elapsed"], saved["losses"], saved["rng"]
        self.extras.update(saved["extras"])
        logger.info("%s: resuming from step %d (%.1f min spent)", self.desc, self.step, self.elapsed / 60)

    def save(self) -> None:
        """Writes the checkpoint (when the loop has a checkpoint file): a temporary file, then a rename."""
        if self.checkpoint is None:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "settings": self.settings,
            "weights": self._trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "total_steps": self.total_steps if self.fixed else None,  # fixed by the time budget
            "elapsed": self.elapsed,
            "losses": self.losses,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            "extras": self.extras,
        }
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_name(self.checkpoint.name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint)

    def _fix_total(self, seconds_per_step: float) -> None:
        """Fixes the number of steps that fit the rest of the time budget; the schedule spans them from now on."""
        fit = self.step + int((self.budget - self.elapsed) / max(seconds_per_step, 1e-9))
        self.fixed = True
        self._set_schedule(max(self.step, min(self.max_steps, fit)), self.scheduler.state_dict())
        args = (self.desc, seconds_per_step, self.budget / 60, self.total_steps)
        logger.info("%s: %.2f s/step, the %.1f-minute budget fits %d steps; the schedule spans them", *args)

    def run(
        self, loss_fn: Callable[[int], torch.Tensor], on_step_end: Callable[[int, float], None] | None = None
    ) -> TrainingLoop:
        """Trains from `step` to `total_steps` (or until the time budget is spent) in train mode, then saves the
        checkpoint and puts the model in eval mode.

        Args:
            loss_fn (`Callable[[int], torch.Tensor]`): the loss of the batch of a 0-based step.
            on_step_end (`Callable[[int, float], None]`, *optional*): called after every optimizer step with the
                number of steps done and the loss, before that step's checkpoint is written (so what it keeps in
                `extras` is saved with it).

        Returns:
            `TrainingLoop`: `self` (`step`, `losses`, `elapsed`, ... updated).
        """
        if self._rng is not None:
            torch.set_rng_state(self._rng["torch"])
            np.random.set_state(self._rng["numpy"])
            random.setstate(self._rng["python"])
            self._rng = None
        elif self.step == 0:
            set_seed(self.seed)
        self.model.train()
        start = time.perf_counter() - self.elapsed
        clock: list[float] = []  # times at which this call's steps ended, until the step count is fixed
        bar = tqdm(total=self.total_steps, initial=self.step, desc=self.desc, unit="step")
        try:
            while self.step < self.total_steps:
                if self.budget is not None and time.perf_counter() - start >= self.budget:
                    self.stopped_by_time = True
                    logger.info("%s: time budget of %.1f min spent at step %d", self.desc, self.budget / 60, self.step)
                    break
                lr = self.optimizer.param_groups[0]["lr"]
                loss = loss_fn(self.step)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                self.losses.append(loss.item())
                now = time.perf_counter()
                self.elapsed = now - start
                if on_step_end is not None:
                    on_step_end(self.step, self.losses[-1])
                bar.update()
                bar.set_postfix(loss=f"{np.mean(self.losses[-20:]):.4f}", lr=f"{lr:.2e}")
                if self.budget is not None and not self.fixed:
                    clock.append(now)
                    if len(clock) > CALIBRATION_STEPS:
                        self._fix_total((clock[-1] - clock[0]) / CALIBRATION_STEPS)
                        bar.total = self.total_steps
                        bar.refresh()
                if self.save_every and self.step % self.save_every == 0 and self.step < self.total_steps:
                    self.save()
        finally:
            bar.close()
        self.elapsed = time.perf_counter() - start
        self.save()
        self.model.eval()
        return self
