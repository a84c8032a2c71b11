"""`OVStableDiffusionPipeline` with step policies: a drop-in for optimum-intel's class of the same name."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
from optimum.intel import OVStableDiffusionPipeline as _OVStableDiffusionPipeline

from .configuration import CONFIG_NAME, StepSaverConfig, config_for_model, validate_step_policy
from .policies.denoising import AdaptiveStop, recording_clean_latents
from .step_predictor import StepPredictor

logger = logging.getLogger(__name__)

_CALL_SIGNATURE = inspect.signature(StableDiffusionPipeline.__call__)
# per-prompt arguments that a sub-batch slices along with the prompts (generators and latents are per image)
_PER_PROMPT = ("prompt", "negative_prompt")


@dataclass
class StepSaverPipelineOutput(StableDiffusionPipelineOutput):
    """`StableDiffusionPipelineOutput` plus `num_inference_steps`: the denoising steps each image ran."""

    num_inference_steps: list[int] | None = None


class OVStableDiffusionPipeline(_OVStableDiffusionPipeline):
    """optimum-intel's `OVStableDiffusionPipeline`, plus step policies.

    On a plain OpenVINO folder it behaves as optimum-intel's class. On a folder exported with
    `optimum-cli export dynexec --task text-to-image`, `pipe(prompt)` without `num_inference_steps` follows the
    folder's step policy:

    - `"predictor"` (StepSaver): a small text model predicts each prompt's fewest sufficient steps. A batch of
      prompts is split into one sub-batch per predicted step count (`batching="group"`, the default, every prompt
      gets its own steps) or run at the batch's largest count (`batching="max"`, one call).
    - `"adaptive"`: run up to `default_steps` and stop once the predicted clean latent stops changing (tolerance
      in the config), decoding the last clean-latent estimate. It needs a scheduler that predicts clean latents
      (DDIM, DDPM, Euler). It works on any pipeline, exported by us or not: `pipe(prompt, step_policy="adaptive")`.
    - `"fixed"`: the plain pipeline.

    An explicit `num_inference_steps` always wins: it runs that fixed schedule, unless the same call also names
    `step_policy="adaptive"`, which then stops within it. The output's `num_inference_steps` lists the steps each
    image ran (also kept in `pipe.last_num_inference_steps`, for `return_dict=False`); after an adaptive call,
    `pipe.last_adaptive_changes` holds the relative change of the clean-latent estimate after each step.

    Example:
        >>> pipe = OVStableDiffusionPipeline.from_pretrained("fashion-sd-dynexec")
        >>> out = pipe(["a photo of a sneaker", "a grey dress"])
        >>> out.images, out.num_inference_steps
    """

    step_config: StepSaverConfig | None = None
    step_predictor: StepPredictor | None = None
    last_num_inference_steps: list[int] | None = None
    last_adaptive_changes: list[float] | None = None

    @classmethod
    def from_pretrained(
        cls,
        model_id,
        *args,
        step_policy: str | None = None,
        step_quantile: float | None = None,
        step_tolerance: float | None = None,
        **kwargs,
    ):
        """Loads a pipeline as optimum-intel does, and its step policy when the folder has a `dynexec_config.json`.

        Args:
            step_policy (`str`, *optional*): overrides the folder's policy: `"predictor"`, `"adaptive"` or `"fixed"`.
            step_quantile (`float`, *optional*): overrides the predictor's quantile, in `(0, 1]`.
            step_tolerance (`float`, *optional*): overrides the adaptive stop's tolerance, in `(0, 1)`.

        Raises:
            `ValueError`: on an unknown policy or out-of-range value, or `"predictor"` for a folder without one.
        """
        if step_policy is not None:
            validate_step_policy(step_policy)
        pipe = super().from_pretrained(model_id, *args, **kwargs)
        folder = Path(model_id)
        config = config_for_model(model_id, StepSaverConfig, "a diffusion pipeline with steps")
        if config is None:
            if step_policy == "predictor":
                raise ValueError(
                    f"{model_id} has no step predictor ({CONFIG_NAME} is missing). Export it with `optimum-cli "
                    "export dynexec --task text-to-image --train-step-predictor` first, or use "
                    "step_policy='adaptive'."
                )
            config = StepSaverConfig(policy="fixed", predictor=None) if step_policy or step_tolerance else None
        if config is None:
            return pipe
        updates = {"policy": step_policy, "quantile": step_quantile, "tolerance": step_tolerance}
        config = StepSaverConfig.from_dict({**config.to_dict(), **{k: v for k, v in updates.items() if v is not None}})
        if config.predictor is not None and (folder / config.predictor).is_dir():
            pipe.step_predictor = StepPredictor.from_folder(
                folder / config.predictor,
                config.step_buckets,
                ov_config=kwargs.get("ov_config"),
                device=kwargs.get("device", "CPU"),
                compile=kwargs.get("compile", True),
            )
        elif config.policy == "predictor":
            raise ValueError(
                f"The step policy is 'predictor' but {folder / str(config.predictor)} holds no step predictor."
            )
        pipe.step_config = config
        return pipe

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
        call = _CALL_SIGNATURE.bind_partial(self, *args, **kwargs).arguments
        call.pop("self")
        call.update(call.pop("kwargs", {}))
        prompt = call.get("prompt")
        if isinstance(prompt, list) and not prompt:
            raise ValueError("The prompt list is empty: give at least one prompt.")
        if step_policy is not None:
            validate_step_policy(step_policy)
        config = self.step_config
        explicit_steps = call.get("num_inference_steps")
        policy = step_policy or ("fixed" if config is None else config.policy)
        if explicit_steps is not None and policy != "adaptive":
            policy = "fixed"  # an explicit step count always wins; only the adaptive stop works within it
        if policy == "adaptive":
            return self._call_adaptive(call, explicit_steps or (config.default_steps if config else 50))
        if policy == "predictor":
            return self._call_predicted(call)
        if explicit_steps is None and config is not None:
            call["num_inference_steps"] = config.default_steps
        out = self._run(call)
        return self._finish(out, [call.get("num_inference_steps") or 50] * len(out.images), call)

    def _run(self, call: dict[str, Any]):
        call = dict(call, return_dict=True)
        return super().__call__(**call)

    def _finish(self, out, steps: list[int], call: dict):
        """The caller's output (a tuple for `return_dict=False`), with the steps each image ran recorded."""
        self.last_num_inference_steps = steps
        if not call.get("return_dict", True):
            return out.images, out.nsfw_content_detected
        return StepSaverPipelineOutput(
            images=out.images, nsfw_content_detected=out.nsfw_content_detected, num_inference_steps=steps
        )

    def _call_adaptive(self, call: dict[str, Any], max_steps: int):
        config = self.step_config or StepSaverConfig(policy="adaptive", predictor=None)
        stop = AdaptiveStop(config.tolerance, config.patience, config.min_steps)
        call = dict(call, num_inference_steps=max_steps)
        user_callback = call.get("callback_on_step_end")
        if user_callback is not None:
            call["callback_on_step_end_tensor_inputs"] = sorted(
                {"latents", *_tensor_inputs(user_callback, call.get("callback_on_step_end_tensor_inputs"))}
            )
            call["callback_on_step_end"] = _chain(user_callback, stop)
        else:
            call["callback_on_step_end"] = stop
            call.pop("callback_on_step_end_tensor_inputs", None)
        with recording_clean_latents(self.scheduler, stop):
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
            sub = _select(call, indices, len(prompts), per_prompt)
            outputs.append(self._run(dict(sub, num_inference_steps=group_steps)))
            rows = [i * per_prompt + j for i in indices for j in range(per_prompt)]
            order.extend(rows)
            for row in rows:
                steps[row] = group_steps
        return self._finish(_merge(outputs, order), steps, call)


def _tensor_inputs(callback, given: list[str] | None) -> list[str]:
    return list(getattr(callback, "tensor_inputs", None) or given or ["latents"])


def _chain(user_callback, stop: AdaptiveStop):
    def callback(pipeline, step_index, timestep, callback_kwargs):
        callback_kwargs = {**callback_kwargs, **(user_callback(pipeline, step_index, timestep, callback_kwargs) or {})}
        return stop(pipeline, step_index, timestep, callback_kwargs)

    return callback


def _select(call: dict[str, Any], indices: list[int], num_prompts: int, per_prompt: int) -> dict[str, Any]:
    """The call arguments of the sub-batch of prompts `indices` (prompt-wise and image-wise lists sliced)."""
    sub = dict(call)
    rows = [i * per_prompt + j for i in indices for j in range(per_prompt)]
    for name in _PER_PROMPT:
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


def _merge(outputs: list, order: list[int]) -> StableDiffusionPipelineOutput:
    """Concatenates the sub-batch outputs and puts the images back in the caller's order."""
    inverse = np.argsort(order)
    first = outputs[0].images
    if isinstance(first, list):
        images = [img for out in outputs for img in out.images]
        images = [images[i] for i in inverse]
    elif isinstance(first, torch.Tensor):
        images = torch.cat([out.images for out in outputs])[torch.from_numpy(inverse)]
    else:
        images = np.concatenate([out.images for out in outputs])[inverse]
    nsfw = None
    if all(out.nsfw_content_detected is not None for out in outputs):
        flags = [flag for out in outputs for flag in out.nsfw_content_detected]
        nsfw = [flags[i] for i in inverse]
    return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=nsfw)
