"""`build_fastapi_app`: the HTTP app over one model folder, its endpoints chosen by the folder's technique."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import Response

from .. import __version__
from .classify import ClassifierService
from .errors import install_error_handlers
from .images import ImageService
from .llm import LLMService
from .loading import LoadedModel, load_model
from .metrics import Metrics, MetricsMiddleware
from .security import GuardMiddleware
from .workers import ModelWorker

logger = logging.getLogger(__name__)

ENDPOINTS = {
    "llm": ["/v1/completions", "/v1/chat/completions"],
    "classifier": ["/predict"],
    "images": ["/v1/images/generations"],
}


@dataclass
class ServeSettings:
    """How the app serves a folder (the CLI's options).

    Args:
        api_key (`str`, *optional*): clients must send it as `Authorization: Bearer KEY`; `None` admits everyone.
        max_queue (`int`, defaults to 16): requests that may wait for the model; the next gets 429 with Retry-After.
        max_body_bytes (`int`, defaults to 1 MiB): the largest request body (413 above it).
        max_batch_size (`int`, defaults to 32): classifier inputs per call, and per request.
        max_wait_ms (`float`, defaults to 5): how long a classifier or generation batch waits for more requests.
        max_images (`int`, defaults to 4): images per request.
        default_max_tokens (`int`, defaults to 256): output budget of a chat request without `max_tokens`.
        max_generation_batch (`int`, defaults to 4): concurrent unseeded generation requests with the same decoding
            settings that share one batched `generate()` call (waiting at most `max_wait_ms` for each other); 1 runs
            every request alone.
        batch_speculation (`bool`, defaults to `True`): a shared call of several requests speculates (its rows
            share the verification calls, and streamed requests may join it); `False` decodes it plainly (a request
            alone still speculates). On SmolLM2-135M with 2 cores, speculative batches of 4 served 1.20x / 1.07x the
            tokens/s of plain ones at 4 / 16 clients on continuation prompts
            (`benchmarks/serving_generation_batch.json`).
        model_name (`str`, *optional*): the name echoed in responses; the folder's name by default.
        device (`str`, defaults to `"CPU"`), ov_config (`dict`, *optional*): how OpenVINO compiles the model (e.g.
            `{"INFERENCE_PRECISION_HINT": "f32"}`).
        exit_threshold (`float`, *optional*): an early-exit classifier's threshold instead of the calibrated one.
    """

    api_key: str | None = None
    max_queue: int = 16
    max_body_bytes: int = 1 << 20
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_images: int = 4
    default_max_tokens: int = 256
    max_generation_batch: int = 4
    batch_speculation: bool = True
    model_name: str | None = None
    device: str = "CPU"
    ov_config: dict | None = None
    exit_threshold: float | None = None

    def __post_init__(self):
        for name in (
            "max_queue",
            "max_body_bytes",
            "max_batch_size",
            "max_images",
            "default_max_tokens",
            "max_generation_batch",
        ):
            value = getattr(self, name)
            if value < (0 if name == "max_queue" else 1):
                raise ValueError(f"{name} must be {'0 or more' if name == 'max_queue' else 'positive'}, got {value}.")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be 0 or more, got {self.max_wait_ms}.")
        if self.api_key == "":
            raise ValueError("api_key is empty: give a key, or none to serve without one.")


def build_fastapi_app(folder: str | Path | LoadedModel, settings: ServeSettings | None = None, **options):
    """The ASGI app serving `folder`: its technique's endpoints, `GET /health`, `GET /metrics`, `GET /v1/models`,
    behind the API key and the body-size limit.

    Args:
        folder (`str`, `Path` or `LoadedModel`): a dynexec or plain optimum-intel OpenVINO folder (or a model
            already loaded with `loading.load_model`).
        settings (`ServeSettings`, *optional*): the options; `**options` are `ServeSettings` fields instead.

    Returns:
        The ASGI app (a FastAPI app wrapped in the metrics and guard middleware); its `.state` (`app.state`) holds
        `fastapi`, `loaded`, `metrics`, `worker` and `service`.

    Raises:
        `ValueError`: for a folder this server cannot serve, or bad settings.
    """
    settings = settings or ServeSettings(**options)
    loaded = (
        folder
        if isinstance(folder, LoadedModel)
        else load_model(folder, settings.device, settings.ov_config, settings.exit_threshold)
    )
    name = settings.model_name or loaded.folder.name
    config = getattr(loaded.model, "config", None)
    step_config = getattr(loaded.model, "step_config", None)
    metrics = Metrics(
        num_hidden_layers=getattr(config, "num_hidden_layers", None) if loaded.kind == "classifier" else None,
        max_steps=step_config.default_steps if step_config is not None else None,
    )
    worker = ModelWorker(loaded.kind, settings.max_queue, on_change=metrics.queue.set)
    if loaded.kind == "llm":
        service = LLMService(
            loaded.model,
            loaded.tokenizer,
            worker,
            metrics,
            name,
            settings.default_max_tokens,
            settings.max_generation_batch,
            settings.max_wait_ms,
            settings.batch_speculation,
        )
    elif loaded.kind == "classifier":
        service = ClassifierService(
            loaded.model,
            loaded.tokenizer,
            worker,
            metrics,
            settings.max_batch_size,
            settings.max_wait_ms,
            settings.max_queue,
        )
    else:
        service = ImageService(loaded.model, worker, metrics, settings.max_images)
    instance, started = uuid.uuid4().hex[:12], int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        worker.shutdown()
        if getattr(service, "batcher", None) is not None:
            service.batcher.close()

    app = FastAPI(
        title=f"optimum-dynexec: {name}",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(service.router())

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "model": name,
            "kind": loaded.kind,
            "dynamic": loaded.dynamic,
            "endpoints": ENDPOINTS[loaded.kind],
            "queue": worker.pending,
            "instance": instance,
        }

    @app.get("/metrics")
    async def prometheus():
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": started, "owned_by": "optimum-dynexec"}],
        }

    guarded = MetricsMiddleware(GuardMiddleware(app, settings.api_key, settings.max_body_bytes), metrics)
    for key, value in {
        "fastapi": app,
        "loaded": loaded,
        "metrics": metrics,
        "worker": worker,
        "service": service,
        "settings": settings,
    }.items():
        setattr(app.state, key, value)
    guarded.state = app.state
    return guarded
