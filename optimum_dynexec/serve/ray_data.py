"""The early-exit classifier as a Ray Data `map_batches` callable, for classifying a corpus on a cluster.

    ds = ray.data.read_parquet("tweets.parquet")
    ds = ds.map_batches(EarlyExitBatchPredictor, fn_constructor_kwargs={"folder": "minilm-dynexec"},
                        batch_size=64, concurrency=2)

Each actor loads the folder once; every batch is one early-exit call, so easy rows leave after the first exits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from ..modeling_early_exit import OVModelForSequenceClassification


class EarlyExitBatchPredictor:
    """Adds `label`, `score` and `exit_layer` columns to batches of a `text` column.

    Args:
        folder (`str` or `Path`): the classifier folder (dynexec or plain optimum-intel).
        text_column (`str`, defaults to `"text"`): the column to classify.
        ov_config (`dict`, *optional*): OpenVINO properties.
        max_length (`int`, *optional*): truncation length; the model's own limit by default.
        exit_threshold (`float`, *optional*): the exit threshold instead of the calibrated one.
    """

    def __init__(
        self,
        folder: str | Path,
        text_column: str = "text",
        ov_config: dict | None = None,
        max_length: int | None = None,
        exit_threshold: float | None = None,
    ):
        self.model = OVModelForSequenceClassification.from_pretrained(
            folder, ov_config=ov_config, exit_threshold=exit_threshold, trust_remote_code=False
        )
        self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        self.text_column = text_column
        self.max_length = max_length or min(self.model.config.max_position_embeddings, self.tokenizer.model_max_length)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch[self.text_column]]
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        out = self.model(**encoded)
        logits = np.asarray(out.logits, dtype=np.float32)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        best = probs.argmax(-1)
        layers = getattr(out, "exit_layers", None)
        if layers is None:
            layers = np.full(len(texts), self.model.config.num_hidden_layers)
        labels = self.model.config.id2label
        return {
            **batch,
            "label": np.asarray([labels[int(i)] for i in best]),
            "score": probs[np.arange(len(texts)), best],
            "exit_layer": np.asarray(layers, dtype=np.int64),
        }
