"""The real prepared MiniLM sentiment classifier (run `make models` first; skipped when it is not cached)."""

import numpy as np
import pytest
from conftest import F32, needs_prepared
from optimum.intel import OVModelForSequenceClassification as PlainOVModel
from transformers import AutoTokenizer

from optimum_dynexec import OVModelForSequenceClassification
from optimum_dynexec.reference.prepare import early_exit_export_dir

FOLDER = early_exit_export_dir("fp32")
pytestmark = needs_prepared("early-exit")


@pytest.fixture(scope="module")
def setup():
    from optimum_dynexec.reference.sentiment import load_sentiment_splits

    test = load_sentiment_splits()["test"].subset(400)
    tokenizer = AutoTokenizer.from_pretrained(FOLDER)
    ours = OVModelForSequenceClassification.from_pretrained(FOLDER, ov_config=F32)
    plain = PlainOVModel.from_pretrained(FOLDER, ov_config=F32)
    batches = [
        dict(tokenizer(test.texts[i : i + 32], padding=True, truncation=True, max_length=128, return_tensors="np"))
        for i in range(0, len(test), 32)
    ]
    return test, tokenizer, ours, plain, batches


def test_exits_disabled_match_optimum_intel(setup):
    _, _, ours, plain, batches = setup
    ours.exits_enabled = False
    try:
        for b in batches:
            np.testing.assert_allclose(ours(**b).logits, plain(**b).logits, atol=1e-4)
    finally:
        ours.exits_enabled = True


def test_calibrated_exits_keep_accuracy_and_save_layers(setup):
    test, _, ours, plain, batches = setup
    outs = [ours(**b) for b in batches]
    preds = np.concatenate([o.logits for o in outs]).argmax(-1)
    full = np.concatenate([plain(**b).logits for b in batches]).argmax(-1)
    labels = np.asarray(test.labels)
    assert (preds == full).mean() >= 0.97
    assert (preds == labels).mean() >= (full == labels).mean() - 0.015
    assert np.concatenate([o.exit_layers for o in outs]).mean() < 4.0


def test_batch_equals_single_on_real_text(setup):
    test, tokenizer, ours, _, _ = setup
    texts = test.texts[:32]
    batch = ours(**tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="np"))
    for i, text in enumerate(texts):
        alone = ours(**tokenizer([text], truncation=True, max_length=128, return_tensors="np"))
        assert alone.exit_layers[0] == batch.exit_layers[i]
        np.testing.assert_allclose(alone.logits[0], batch.logits[i], atol=1e-4)
