"""`/predict` over a sequence classifier (text-embeddings-inference's shape), batched across concurrent requests."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter

from .errors import APIError
from .metrics import Metrics
from .schemas import PredictRequest
from .workers import MicroBatcher, ModelWorker


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class ClassifierService:
    """Classifies the texts of concurrent requests in shared batched calls (which early exit's batch compaction
    rewards: a batch's easy inputs leave after the first exits and the rest run on).

    Args:
        model (`OVModelForSequenceClassification`): the loaded classifier.
        tokenizer: its tokenizer.
        worker (`ModelWorker`): the model's thread.
        metrics (`Metrics`): where counts go.
        max_batch_size (`int`): inputs per model call, and per request.
        max_wait_ms (`float`): how long a batch waits for more requests.
        max_queue (`int`): requests that may wait before 429.
    """

    def __init__(
        self,
        model,
        tokenizer,
        worker: ModelWorker,
        metrics: Metrics,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
    ):
        self.model, self.tokenizer, self.metrics, self.max_batch_size = model, tokenizer, metrics, max_batch_size
        self.max_length = min(getattr(model.config, "max_position_embeddings", 512), tokenizer.model_max_length)
        self.labels = model.config.id2label
        self.batcher = MicroBatcher(worker, self._run_batch, max_batch_size, max_wait_ms, max_queue)

    def _encode(self, texts: list[str], truncate: bool) -> list[dict]:
        encoded = self.tokenizer(texts, truncation=truncate, max_length=self.max_length if truncate else None)
        rows = [{k: encoded[k][i] for k in encoded} for i in range(len(texts))]
        for i, row in enumerate(rows):
            if len(row["input_ids"]) > self.max_length:
                raise APIError(
                    413,
                    f"Input {i} has {len(row['input_ids'])} tokens; this model reads at most {self.max_length}. "
                    "Shorten it or send `truncate: true`.",
                    param="inputs",
                    code="context_length_exceeded",
                )
        return rows

    def _run_batch(self, rows: list[dict], early_exit: bool | None) -> list[tuple[np.ndarray, int]]:
        """One padded call over the rows of several requests (on the model's thread)."""
        batch = self.tokenizer.pad(rows, padding=True, return_tensors="np")
        feeds = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        has_exits = getattr(self.model, "has_early_exit", False)
        enabled = self.model.exits_enabled if has_exits else False
        if has_exits and early_exit is not None:
            self.model.exits_enabled = early_exit
        try:
            out = self.model(**feeds)
        finally:
            if has_exits:
                self.model.exits_enabled = enabled
        logits = np.asarray(out.logits, dtype=np.float32)
        layers = getattr(out, "exit_layers", None)
        if layers is None:
            layers = np.full(len(rows), self.model.config.num_hidden_layers)
        self.metrics.batch_size.observe(len(rows))
        return [(logits[i], int(layers[i])) for i in range(len(rows))]

    def _scores(self, logits: np.ndarray, raw: bool, layer: int) -> list[dict]:
        values = logits if raw else softmax(logits)
        order = np.argsort(-values, kind="stable")
        return [{"label": self.labels[int(i)], "score": float(values[i]), "exit_layer": layer} for i in order]

    async def predict(self, body: PredictRequest) -> list:
        single = isinstance(body.inputs, str)
        texts = [body.inputs] if single else body.inputs
        if not texts:
            raise APIError(400, "`inputs` is empty: give at least one text.", param="inputs", code="empty_input")
        if len(texts) > self.max_batch_size:
            raise APIError(
                413,
                f"{len(texts)} inputs exceed this server's batch limit of {self.max_batch_size}.",
                param="inputs",
                code="batch_too_large",
            )
        if any(not t.strip() for t in texts):
            raise APIError(
                400, "An input is empty: every text needs at least one word.", param="inputs", code="empty_input"
            )
        if body.early_exit and not getattr(self.model, "has_early_exit", False):
            raise APIError(
                400,
                "This model has no exit heads: `early_exit: true` cannot be served.",
                param="early_exit",
                code="invalid_value",
            )
        results = await self.batcher.submit(self._encode(texts, body.truncate), key=body.early_exit)
        for _, layer in results:
            self.metrics.exit_layer.observe(layer)
        self.metrics.classified.inc(len(results))
        predictions = [self._scores(logits, body.raw_scores, layer) for logits, layer in results]
        return predictions[0] if single else predictions

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.post("/predict")
        async def predict(body: PredictRequest):
            return await self.predict(body)

        return router
