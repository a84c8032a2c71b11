"""`/v1/images/generations` over a Stable Diffusion pipeline (OpenAI's shape, base64 PNGs), reporting its steps."""

from __future__ import annotations

import base64
import io
import time

import torch
from fastapi import APIRouter

from .errors import APIError
from .metrics import Metrics
from .schemas import ImageRequest
from .workers import ModelWorker

MAX_SIDE = 2048


class ImageService:
    """Generates images on the pipeline's thread.

    Args:
        pipe (`OVStableDiffusionPipeline`): the loaded pipeline.
        worker (`ModelWorker`): its thread and queue.
        metrics (`Metrics`): where counts go.
        max_images (`int`): the largest `n` of one request.
    """

    def __init__(self, pipe, worker: ModelWorker, metrics: Metrics, max_images: int):
        self.pipe, self.worker, self.metrics, self.max_images = pipe, worker, metrics, max_images
        config = pipe.step_config
        self.default_steps = config.default_steps if config is not None else 50
        self.max_prompt_tokens = pipe.tokenizer.model_max_length
        self.native = int(pipe.unet.config.get("sample_size", 64)) * int(pipe.vae_scale_factor)

    def _size(self, size: str | None) -> tuple[int, int]:
        if size is None:
            return self.native, self.native
        width, height = (int(x) for x in size.split("x"))
        if not (8 <= width <= MAX_SIDE and 8 <= height <= MAX_SIDE) or width % 8 or height % 8:
            raise APIError(
                400,
                f"size {size!r}: both sides must be multiples of 8 between 8 and {MAX_SIDE} "
                f"(this model's native size is {self.native}x{self.native}).",
                param="size",
                code="invalid_value",
            )
        return width, height

    def _generate(self, body: ImageRequest, width: int, height: int):
        generator = None if body.seed is None else torch.Generator().manual_seed(body.seed)
        call = {"num_images_per_prompt": body.n, "width": width, "height": height, "generator": generator}
        if body.num_inference_steps is not None:
            call["num_inference_steps"] = body.num_inference_steps
        if body.step_policy is not None:
            call["step_policy"] = body.step_policy
        return self.pipe(body.prompt, **call)

    async def generate(self, body: ImageRequest) -> dict:
        if body.n > self.max_images:
            raise APIError(
                413,
                f"n={body.n} exceeds this server's limit of {self.max_images} images per request.",
                param="n",
                code="batch_too_large",
            )
        if body.step_policy == "predictor" and getattr(self.pipe, "step_predictor", None) is None:
            raise APIError(
                400,
                "This pipeline has no step predictor: use step_policy 'adaptive' or 'fixed'.",
                param="step_policy",
                code="invalid_value",
            )
        tokens = len(self.pipe.tokenizer(body.prompt)["input_ids"])
        if tokens > self.max_prompt_tokens:
            raise APIError(
                400,
                f"The prompt has {tokens} tokens; this pipeline reads at most {self.max_prompt_tokens}.",
                param="prompt",
                code="context_length_exceeded",
            )
        width, height = self._size(body.size)
        out = await self.worker.run(self._generate, body, width, height)
        steps = list(out.num_inference_steps or [body.num_inference_steps or self.default_steps] * len(out.images))
        data = []
        for image, used in zip(out.images, steps):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            data.append({"b64_json": base64.b64encode(buffer.getvalue()).decode(), "num_inference_steps": used})
            self.metrics.steps.observe(used)
            self.metrics.steps_saved.inc(max(0, self.default_steps - used))
        self.metrics.images.inc(len(data))
        return {"created": int(time.time()), "data": data, "num_inference_steps": steps}

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.post("/v1/images/generations")
        async def images(body: ImageRequest):
            return await self.generate(body)

        return router
