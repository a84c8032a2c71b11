"""Text loading, exit-head training and its persistence."""

import numpy as np
import pytest
import torch
from tiny_models import random_texts
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from optimum_dynexec.data import TextDataset, read_text_file
from optimum_dynexec.reference.sentiment import load_sentiment_splits
from optimum_dynexec.training.exit_heads import (
    ExitHeads,
    ExitHeadTrainingConfig,
    collect_layer_features,
    train_exit_heads,
)


def test_read_txt_and_csv(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\n two \n")
    assert read_text_file(tmp_path / "a.txt").texts == ["one", "two"]
    (tmp_path / "b.csv").write_text("text,label\nhi,pos\nho,neg\n")
    data = read_text_file(tmp_path / "b.csv")
    assert data.texts == ["hi", "ho"] and data.labels == [1, 0]
    (tmp_path / "c.csv").write_text("sentence\nhi\n")
    with pytest.raises(ValueError, match="no `text` column"):
        read_text_file(tmp_path / "c.csv")
    (tmp_path / "d.json").write_text("{}")
    with pytest.raises(ValueError, match=".txt or .csv"):
        read_text_file(tmp_path / "d.json")
    (tmp_path / "e.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no text"):
        read_text_file(tmp_path / "e.txt")


def test_sentiment_splits_are_deterministic_disjoint_and_deduplicated():
    splits = load_sentiment_splits()
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes["train"] > 7 * sizes["test"] > 0
    seen = [set(s.texts) for s in splits.values()]
    assert all(len(s) == len(split) for s, split in zip(seen, splits.values())), "duplicates inside a split"
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert set(splits["test"].labels) == {0, 1}
    assert load_sentiment_splits()["test"].texts == splits["test"].texts


@pytest.fixture(scope="module")
def hf_model(tiny_bert):
    return AutoModelForSequenceClassification.from_pretrained(tiny_bert).eval(), AutoTokenizer.from_pretrained(
        tiny_bert
    )


def test_distillation_makes_heads_agree_with_the_final_classifier(hf_model):
    model, tokenizer = hf_model
    texts = random_texts(400, seed=2)
    pooled, teacher = collect_layer_features(model, tokenizer, texts, [1, 2, 3])
    untrained = ExitHeads([1, 2, 3], 32, 2)
    trained = train_exit_heads(
        model, tokenizer, TextDataset(texts), [1, 2, 3], ExitHeadTrainingConfig(epochs=20, learning_rate=5e-3)
    )

    def distillation_gap(heads):  # mean KL(teacher || head) over the training text, summed over heads
        with torch.no_grad():
            target = torch.log_softmax(teacher, -1)
            return sum(
                torch.nn.functional.kl_div(
                    torch.log_softmax(heads.head(lay).classify(pooled[j]), -1),
                    target,
                    log_target=True,
                    reduction="batchmean",
                ).item()
                for j, lay in enumerate([1, 2, 3])
            )

    assert distillation_gap(trained) < 0.5 * distillation_gap(untrained)
    assert all(not p.requires_grad for p in model.parameters()), "the backbone must stay frozen"


def test_heads_save_and_load(hf_model, tmp_path):
    model, tokenizer = hf_model
    heads = train_exit_heads(model, tokenizer, TextDataset(random_texts(50)), [2], ExitHeadTrainingConfig(epochs=1))
    heads.save_pretrained(tmp_path)
    again = ExitHeads.from_pretrained(tmp_path)
    assert again.exit_layers == [2]
    x = torch.randn(3, 5, 32)
    mask = torch.ones(3, 5)
    np.testing.assert_allclose(heads.head(2)(x, mask).detach(), again.head(2)(x, mask).detach())
    with pytest.raises(FileNotFoundError, match="no exit heads"):
        ExitHeads.from_pretrained(tmp_path / "missing")


def test_training_rejects_bad_input(hf_model):
    model, tokenizer = hf_model
    with pytest.raises(ValueError, match="some training text"):
        train_exit_heads(model, tokenizer, TextDataset([]))
    with pytest.raises(ValueError, match="Labels must lie"):
        train_exit_heads(model, tokenizer, TextDataset(["good", "bad"], [0, 5]))
    with pytest.raises(ValueError, match="label_weight"):
        ExitHeadTrainingConfig(label_weight=2.0)


def test_exit_head_training_is_seeded(hf_model):
    model, tokenizer = hf_model
    data = TextDataset(random_texts(60, seed=4))
    heads = [
        train_exit_heads(model, tokenizer, data, [1, 3], ExitHeadTrainingConfig(epochs=2, batch_size=16, seed=seed))
        for seed in (0, 0, 1)
    ]
    same, other = heads[1].state_dict(), heads[2].state_dict()
    for name, value in heads[0].state_dict().items():
        assert torch.equal(value, same[name]), name
    assert not all(torch.equal(value, other[name]) for name, value in heads[0].state_dict().items())
