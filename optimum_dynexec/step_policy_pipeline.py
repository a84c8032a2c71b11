"""`StepPolicyMixin`: the step policies (StepSaver's predicted steps, the adaptive stop, fixed) on top of any of
optimum-intel's text-to-image pipelines. The per-family classes in `modeling_diffusion` only name their quirks."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .configuration import CONFIG_NAME, StepSaverConfig, config_for_model, validate_step_policy
from .policies.denoising import AdaptiveStop, recording_clean_latents
from .step_predictor import StepPredictor

logger = logging.getLogger(__name__)


@functools.cache
def _call_signature(pipeline_class: type) -> inspect.Signature:
    return inspect.signature(pipeline_class.__call__)


class StepPolicyMixin:
    """Step policies for an optimum-intel text-to-image pipeline; mix in before optimum-intel's class.

    On a plain OpenVINO folder the pipeline behaves as optimum-intel's class. On a folder exported with
    `optimum-cli export dynexec --task text-to-image`, `pipe(prompt)` without `num_inference_steps` follows the
    folder's step policy:

    - `"predictor"` (StepSaver): a small text model predicts each prompt's fewest sufficient steps. A batch of
      prompts is split into one sub-batch per predicted step count (`batching="group"`, the default, every prompt
      gets its own steps) or run at the batch's largest count (`batching="max"`, one call).
    - `"adaptive"`: run up to `default_steps` and stop once the predicted clean latent stops changing (tolerance
      in the config), decoding the last clean-latent estimate. It works on any pipeline, exported by us or not:
      `pipe(prompt, step_policy="adaptive")`.
    - `"fixed"`: the plain pipeline, at `default_steps`.

    An explicit `num_inference_steps` always wins: it runs that fixed schedule, unless the same call also names
    `step_policy="adaptive"`, which then stops within it. The output's `num_inference_steps` lists the steps each
    image ran (also kept in `pipe.last_num_inference_steps`, for `return_dict=False`); after an adaptive call,
    `pipe.last_adaptive_changes` holds the relative change of the clean-latent estimate after each step.

    A subclass names its family's quirks:

    - `output_class`: the family's output dataclass plus a `num_inference_steps` field.
    - `per_prompt_arguments`: the call arguments holding one entry per prompt, sliced with the prompts when a batch
      is split by predicted steps.
    - `clean_latents_input` and `_adaptive_hooks`: where the adaptive stop reads the clean-latent estimate, and how
      the loop is made to skip the steps after the stop.
    """

    output_class: type = None
    per_prompt_arguments: tuple[str, ...] = ("prompt", "negative_prompt")
    clean_latents_input: str | None = None  # None: the scheduler's `pred_original_sample`
    step_config: StepSaverConfig | None = None
    step_predictor: StepPredictor | None = None
    last_num_inference_steps: list[int] | None = None
    last_adaptive_changes: list[float] | None = None

    @classmethod
    def default_num_inference_steps(cls) -> int:
        """The family's own default step count (diffusers' `__call__` default: 50 for SD and SDXL, 4 for LCM)."""
        return int(_call_signature(cls.auto_model_class).parameters["num_inference_steps"].default)

    @classmethod
    def _from_pretrained(
        cls,
        model_id,
        config,
        step_policy: str | None = None,
        step_quantile: float | None = None,
        step_tolerance: float | None = None,
        **kwargs,
    ):
        """optimum-intel's loading hook (reached by `from_pretrained`, with `export=True` too): loads the pipeline as
        optimum-intel does, and its step policy when the folder has a `dynexec_config.json`.

        Args:
            step_policy (`str`, *optional*): overrides the folder's policy: `"predictor"`, `"adaptive"` or `"fixed"`.
            step_quantile (`float`, *optional*): overrides the predictor's quantile, in `(0, 1]`.
            step_tolerance (`float`, *optional*): overrides the adaptive stop's tolerance, in `(0, 1)`.

        Raises:
            `ValueError`: on an unknown policy or out-of-range value, or `"predictor"` for a folder without one.
        """
        if step_policy is not None:
            validate_step_policy(step_policy)
        overrides = {"policy": step_policy, "quantile": step_quantile, "tolerance": step_tolerance}
        step_config = cls._step_config(model_id, {k: v for k, v in overrides.items() if v is not None})
        pipe = super()._from_pretrained(model_id, config, **kwargs)
        if step_config is not None:
            pipe._load_step_policy(Path(model_id), step_config, kwargs)
        return pipe

    @classmethod
    def _step_config(cls, model_id, overrides: dict[str, Any]) -> StepSaverConfig | None:
        """The folder's step config with the load-time overrides (a fixed one when only they ask for a policy), read
        and validated before the slow load."""
        step_config = config_for_model(model_id, StepSaverConfig, "a diffusion pipeline with steps")
        if step_config is None:
            if overrides.get("policy") == "predictor":
                raise ValueError(
                    f"{model_id} has no step predictor ({CONFIG_NAME} is missing). Export it with `optimum-cli "
                    "export dynexec --task text-to-image --train-step-predictor` first, or use "
                    "step_policy='adaptive'."
                )
            if "policy" not in overrides and "tolerance" not in overrides:
                return None
            step_config = StepSaverConfig(
                policy="fixed", predictor=None, default_steps=cls.default_num_inference_steps()
            )
        step_config = StepSaverConfig.from_dict({**step_config.to_dict(), **overrides})
        if step_config.policy == "predictor" and not (Path(model_id) / step_config.predictor).is_dir():
            raise ValueError(
                f"The step policy is 'predictor' but {Path(model_id) / step_config.predictor} holds no step predictor."
            )
        return step_config

    def _load_step_policy(self, folder: Path, step_config: StepSaverConfig, load_kwargs: dict[str, Any]) -> None:
        """Sets the step config and loads its predictor with the pipeline's device and OpenVINO config."""
        if step_config.predictor is not None and (folder / step_config.predictor).is_dir():
            self.step_predictor = StepPredictor.from_folder(
                folder / step_config.predictor,
                step_config.step_buckets,
                ov_config=load_kwargs.get("ov_config"),
                device=load_kwargs.get("device", "CPU"),
                compile=load_kwargs.get("compile", True),
            )
        self.step_config = step_config

    def _save_pretrained(self, save_directory):
        super()._save_pretrained(save_directory)
        if self.step_config is None:
            return
        if self.step_predictor is not None:
            self.step_predictor.save(Path(save_directory) / self.step_config.predictor)
        self.step_config.save(save_directory)

    def predict_steps(self, prompts: str | list[str], quantile: float | None = None) -> list[int]:
        """The StepSaver step count of each prompt.

        Raises:
            `ValueError`: when the pipeline has no step predictor, or `prompts` is empty.
        """
        if self.step_predictor is None:
            raise ValueError("This pipeline has no step predictor: export it with `--train-step-predictor`.")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("The prompt list is empty.")
        config = self.step_config
        return self.step_predictor.predict(prompts, config.quantile if quantile is None else quantile).tolist()

    def __call__(self, *args, step_policy: str | None = None, **kwargs):
        # initialise: the call's arguments by name, whatever the family's positional order
        call = _call_signature(self.auto_model_class).bind_partial(self, *args, **kwargs).arguments
        call.pop("self")
        call.update(call.pop("kwargs", {}))
        prompt = call.get("prompt")
        if isinstance(prompt, list) and not prompt:
            raise ValueError("The prompt list is empty: give at least one prompt.")
        if step_policy is not None:
            validate_step_policy(step_policy)
        # decide: an explicit step count always wins; only the adaptive stop works within it
        config = self.step_config
        explicit_steps = call.get("num_inference_steps")
        policy = step_policy or ("fixed" if config is None else config.policy)
        if explicit_steps is not None and policy != "adaptive":
            policy = "fixed"
        # run
        if policy == "adaptive":
            default_steps = config.default_steps if config is not None else self.default_num_inference_steps()
            return self._call_adaptive(call, explicit_steps or default_steps)
        if policy == "predictor":
            return self._call_predicted(call)
        if explicit_steps is None and config is not None:
            call["num_inference_steps"] = config.default_steps
        out = self._run(call)
        return self._finish(out, [self._fixed_steps(call)] * len(out.images), call)

    def _fixed_steps(self, call: dict[str, Any]) -> int:
        """The steps a fixed-schedule call runs: its custom `timesteps` / `sigmas`, else its step count."""
        for schedule in ("timesteps", "sigmas"):
            if call.get(schedule) is not None:
                return len(call[schedule])
        return call.get("num_inference_steps") or self.default_num_inference_steps()

    def _adaptive_hooks(self, stop: AdaptiveStop) -> AbstractContextManager:
        """What the adaptive stop needs around the loop: by default, the scheduler's clean-latent estimates."""
        return recording_clean_latents(self.scheduler, stop)

    def _run(self, call: dict[str, Any]):
        return super().__call__(**dict(call, return_dict=True))

    def _finish(self, out, steps: list[int], call: dict):
        """The caller's output (the family's tuple for `return_dict=False`), with the steps each image ran."""
        self.last_num_inference_steps = steps
        values = {field.name: getattr(out, field.name) for field in dataclasses.fields(out)}
        if not call.get("return_dict", True):
            return tuple(values.values())
        return self.output_class(**values, num_inference_steps=steps)

    def _call_adaptive(self, call: dict[str, Any], max_steps: int):
        config = self.step_config or StepSaverConfig(policy="adaptive", predictor=None)
        stop = AdaptiveStop(config.tolerance, config.patience, config.min_steps, self.clean_latents_input)
        call = dict(call, num_inference_steps=max_steps)
        user_callback = call.get("callback_on_step_end")
        user_inputs = _tensor_inputs(user_callback, call.get("callback_on_step_end_tensor_inputs"))
        call["callback_on_step_end_tensor_inputs"] = sorted({*stop.tensor_inputs, *user_inputs})
        call["callback_on_step_end"] = stop if user_callback is None else _chain(user_callback, stop)
        with self._adaptive_hooks(stop):
            out = self._run(call)
        self.last_adaptive_changes = list(stop.changes)
        logger.debug("adaptive stop after %d of %d steps (changes %s)", stop.steps_used, max_steps, stop.changes)
        return self._finish(out, [stop.steps_used] * len(out.images), call)

    def _call_predicted(self, call: dict[str, Any]):
        prompt = call.get("prompt")
        if prompt is None:
            raise ValueError(
                "The 'predictor' step policy reads the prompt text: pass `prompt`, or pass `num_inference_steps` "
                "with `prompt_embeds`."
            )
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        predicted = self.predict_steps(prompts)
        per_prompt = max(1, int(call.get("num_images_per_prompt") or 1))
        if self.step_config.batching == "max" or len(set(predicted)) == 1:
            call = dict(call, num_inference_steps=max(predicted))
            out = self._run(call)
            return self._finish(out, [max(predicted)] * len(out.images), call)
        groups: dict[int, list[int]] = {}
        for index, steps in enumerate(predicted):
            groups.setdefault(steps, []).append(index)
        outputs, order = [], []
        steps = [0] * (len(prompts) * per_prompt)
        for group_steps, indices in sorted(groups.items()):
            sub = _select(call, self.per_prompt_arguments, indices, len(prompts), per_prompt)
            outputs.append(self._run(dict(sub, num_inference_steps=group_steps)))
            rows = [i * per_prompt + j for i in indices for j in range(per_prompt)]
            order.extend(rows)
            for row in rows:
                steps[row] = group_steps
        return self._finish(_merge(outputs, order), steps, call)


def _tensor_inputs(callback, given: list[str] | None) -> list[str]:
    if callback is None:
        return []
    return list(getattr(callback, "tensor_inputs", None) or given or ["latents"])


def _chain(user_callback, stop: AdaptiveStop):
    def callback(pipeline, step_index, timestep, callback_kwargs):
        if not stop.stopped:  # a loop that keeps going after the stop (LCM) no longer calls the user
            callback_kwargs = {
                **callback_kwargs,
                **(user_callback(pipeline, step_index, timestep, callback_kwargs) or {}),
            }
        return stop(pipeline, step_index, timestep, callback_kwargs)

    return callback


def _select(
    call: dict[str, Any], per_prompt_arguments: tuple[str, ...], indices: list[int], num_prompts: int, per_prompt: int
) -> dict[str, Any]:
    """The call arguments of the sub-batch of prompts `indices` (prompt-wise and image-wise lists sliced)."""
    sub = dict(call)
    rows = [i * per_prompt + j for i in indices for j in range(per_prompt)]
    for name in per_prompt_arguments:
        value = call.get(name)
        if isinstance(value, list) and len(value) == num_prompts:
            sub[name] = [value[i] for i in indices]
    generator = call.get("generator")
    if isinstance(generator, list):
        if len(generator) != num_prompts * per_prompt:
            raise ValueError(
                f"Got {len(generator)} generators for {num_prompts * per_prompt} images; give one per image."
            )
        sub["generator"] = [generator[r] for r in rows]
    elif generator is not None:
        # one generator for the whole batch cannot be split faithfully: each sub-batch draws from it in turn
        logger.warning("A single generator is shared by the step groups; pass one generator per image to reproduce.")
    latents = call.get("latents")
    if latents is not None:
        sub["latents"] = latents[rows]
    return sub


def _merge(outputs: list, order: list[int]):
    """Concatenates the sub-batch outputs field by field and puts the images back in the caller's order."""
    inverse = np.argsort(order)
    merged = {}
    for field in dataclasses.fields(outputs[0]):
        values = [getattr(out, field.name) for out in outputs]
        merged[field.name] = None if any(v is None for v in values) else _concat(values, inverse)
    return type(outputs[0])(**merged)


def _concat(values: list, inverse: np.ndarray):
    if isinstance(values[0], torch.Tensor):
        return torch.cat(values)[torch.from_numpy(inverse)]
    if isinstance(values[0], np.ndarray):
        return np.concatenate(values)[inverse]
    flat = [item for value in values for item in value]  # PIL images, nsfw flags
    return [flat[i] for i in inverse]
