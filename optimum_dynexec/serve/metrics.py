"""Prometheus metrics of one app (a registry of its own, so that several apps can live in one process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ACCEPTANCE_BUCKETS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)


class Metrics:
    """The counters the server exports at `GET /metrics`, all prefixed `dynexec_`.

    Args:
        num_hidden_layers (`int`, *optional*): the classifier's depth, for the exit-layer buckets.
        max_steps (`int`, *optional*): the pipeline's default steps, for the step buckets.
    """

    def __init__(self, num_hidden_layers: int | None = None, max_steps: int | None = None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("dynexec_requests", "HTTP requests served", ["endpoint", "status"], registry=r)
        self.latency = Histogram(
            "dynexec_request_latency_seconds",
            "Time to the end of the response",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter("dynexec_rejected", "Requests refused by back-pressure (429)", registry=r)
        self.queue = Gauge("dynexec_queue_depth", "Model calls running or waiting", registry=r)
        self.prompt_tokens = Counter("dynexec_prompt_tokens", "Prompt tokens read", registry=r)
        self.generated_tokens = Counter("dynexec_generated_tokens", "Tokens generated", registry=r)
        self.target_calls = Counter(
            "dynexec_target_calls", "Target-model calls of speculative generations", registry=r
        )
        self.accepted_tokens = Counter("dynexec_accepted_draft_tokens", "Draft tokens the target accepted", registry=r)
        self.proposed_tokens = Counter("dynexec_proposed_draft_tokens", "Draft tokens proposed", registry=r)
        self.tokens_per_call = Histogram(
            "dynexec_tokens_per_target_call",
            "Tokens generated per target call, per speculative request",
            buckets=ACCEPTANCE_BUCKETS,
            registry=r,
        )
        self.generation_batch_size = Histogram(
            "dynexec_generation_batch_size",
            "Requests per generate() call (concurrent compatible requests share one call)",
            buckets=(1, 2, 4, 8, 16, 32),
            registry=r,
        )
        self.cancelled = Counter("dynexec_cancelled_generations", "Generations stopped by a disconnect", registry=r)
        layers = tuple(range(1, (num_hidden_layers or 24) + 1))
        self.exit_layer = Histogram(
            "dynexec_exit_layer", "Encoder layers each classified input ran", buckets=layers, registry=r
        )
        self.classified = Counter("dynexec_classified_inputs", "Inputs classified", registry=r)
        self.batch_size = Histogram(
            "dynexec_batch_size",
            "Inputs per batched classifier call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        steps = tuple(sorted({1, 2, 4, 8, 10, 15, 20, 25, 30, 40, 50, max_steps or 50}))
        self.steps = Histogram("dynexec_denoising_steps", "Denoising steps per image", buckets=steps, registry=r)
        self.steps_saved = Counter(
            "dynexec_steps_saved", "Denoising steps saved against the pipeline's default schedule", registry=r
        )
        self.images = Counter("dynexec_images", "Images generated", registry=r)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts every response by endpoint and status, and times it to its last byte (streams included)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500
        endpoint = scope["path"] if scope["path"] in KNOWN_PATHS else "other"

        async def counting_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
            if status == 429:
                self.metrics.rejected.inc()


KNOWN_PATHS = {
    "/v1/completions",
    "/v1/chat/completions",
    "/predict",
    "/v1/images/generations",
    "/health",
    "/metrics",
    "/v1/models",
}
