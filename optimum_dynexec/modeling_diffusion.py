"""Text-to-image pipelines with step policies: drop-ins for optimum-intel's classes of the same names.

Each class is optimum-intel's pipeline with `StepPolicyMixin` (StepSaver's predicted steps, the adaptive stop, fixed);
the classes only name their family's quirks.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
from diffusers.pipelines.stable_diffusion_xl import StableDiffusionXLPipelineOutput
from optimum.intel import OVLatentConsistencyModelPipeline as _OVLatentConsistencyModelPipeline
from optimum.intel import OVStableDiffusionPipeline as _OVStableDiffusionPipeline
from optimum.intel import OVStableDiffusionXLPipeline as _OVStableDiffusionXLPipeline

from .policies.denoising import AdaptiveStop, skipping_after_stop
from .step_policy_pipeline import StepPolicyMixin


@dataclass
class StepSaverPipelineOutput(StableDiffusionPipelineOutput):
    """`StableDiffusionPipelineOutput` plus `num_inference_steps`: the denoising steps each image ran."""

    num_inference_steps: list[int] | None = None


@dataclass
class StepSaverXLPipelineOutput(StableDiffusionXLPipelineOutput):
    """`StableDiffusionXLPipelineOutput` plus `num_inference_steps`: the denoising steps each image ran."""

    num_inference_steps: list[int] | None = None


class OVStableDiffusionPipeline(StepPolicyMixin, _OVStableDiffusionPipeline):
    """optimum-intel's `OVStableDiffusionPipeline`, plus step policies (see `StepPolicyMixin`).

    Example:
        >>> pipe = OVStableDiffusionPipeline.from_pretrained("fashion-sd-dynexec")
        >>> out = pipe(["a photo of a sneaker", "a grey dress"])
        >>> out.images, out.num_inference_steps
    """

    output_class = StepSaverPipelineOutput


class OVStableDiffusionXLPipeline(StepPolicyMixin, _OVStableDiffusionXLPipeline):
    """optimum-intel's `OVStableDiffusionXLPipeline`, plus step policies (see `StepPolicyMixin`).

    SDXL's quirks: two text encoders, whose second prompts (`prompt_2`, `negative_prompt_2`) are sliced with the
    prompts when a batch is split by predicted steps, and an output without NSFW flags (`return_dict=False` gives
    `(images,)`). Its loop checks `_interrupt`, so the adaptive stop skips the remaining steps as in Stable Diffusion.
    """

    output_class = StepSaverXLPipelineOutput
    per_prompt_arguments = ("prompt", "prompt_2", "negative_prompt", "negative_prompt_2")


class OVLatentConsistencyModelPipeline(StepPolicyMixin, _OVLatentConsistencyModelPipeline):
    """optimum-intel's `OVLatentConsistencyModelPipeline`, plus step policies (see `StepPolicyMixin`).

    LCM's quirks: no negative prompt (its `guidance_scale` is a UNet input, not classifier-free guidance, so a batch
    is one UNet row per image), a default of 4 steps, and a loop that decodes the scheduler's `denoised` estimate
    rather than the latents. The adaptive stop reads that estimate from the step callback (LCM's scheduler returns no
    `pred_original_sample`) and holds it after the stop; as the loop has no `_interrupt` check, the UNet is skipped
    for the remaining steps instead.
    """

    output_class = StepSaverPipelineOutput
    per_prompt_arguments = ("prompt",)
    clean_latents_input = "denoised"

    def _adaptive_hooks(self, stop: AdaptiveStop) -> AbstractContextManager:
        return skipping_after_stop(self.unet, stop)


# optimum-intel's text-to-image class -> the class with step policies
STEP_POLICY_PIPELINES = {
    _OVStableDiffusionPipeline: OVStableDiffusionPipeline,
    _OVStableDiffusionXLPipeline: OVStableDiffusionXLPipeline,
    _OVLatentConsistencyModelPipeline: OVLatentConsistencyModelPipeline,
}
