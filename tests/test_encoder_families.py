"""Early exit on every encoder family it supports: each tiny random classifier exports with the automatic exit
selection, its segments without exits equal optimum-intel's plain class, and a threshold of 0 exits at the first exit.
Families it cannot cut faithfully are refused with a clear error."""

import numpy as np
import pytest
import torch
from conftest import F32
from optimum.intel import OVModelForSequenceClassification as PlainOVModel
from tiny_models import make_tiny_bert, random_texts
from transformers import AlbertConfig, AlbertForSequenceClassification, AutoTokenizer

from optimum_dynexec import OVModelForSequenceClassification, export_early_exit
from optimum_dynexec.data import TextDataset
from optimum_dynexec.exporters.encoder_segments import ADAPTERS, get_adapter

# every family optimum-intel exports for text-classification that early exit cuts into segments (the README's family
# table is generated from this list: tests/family_tables.py)
ENCODER_FAMILIES = [
    "bert",
    "roberta",
    "xlm-roberta",
    "camembert",
    "electra",
    "distilbert",
    "albert",  # shared layer groups, embedding projection (tiny: 2 groups over 3 steps)
    "deberta-v2",  # relative attention with log buckets, rel-embedding layer norm, the first layer's convolution
    "mpnet",  # relative position bias
]
NUM_LAYERS = 3  # exits after layers 1 and 2 are the candidates, so the automatic selection has a choice
TEXTS = random_texts(12, seed=7)


@pytest.fixture(scope="module", params=ENCODER_FAMILIES)
def family(request, tmp_path_factory):
    """`(model_type, folder, config)`: the family's tiny classifier exported with automatic exit selection."""
    model_type = request.param
    root = tmp_path_factory.mktemp(model_type)
    source = make_tiny_bert(root / "hf", num_layers=NUM_LAYERS, model_type=model_type)
    train = TextDataset(random_texts(80, seed=1))
    config = export_early_exit(source, root / "dynexec", exit_layers="auto", train_data=train, target_agreement=0.9)
    return model_type, root / "dynexec", config


@pytest.fixture(scope="module")
def loaded(family):
    """Our class, optimum-intel's class and a tokenized batch (with token_type_ids, as a BERT tokenizer gives)."""
    _, folder, _ = family
    ours = OVModelForSequenceClassification.from_pretrained(folder, ov_config=F32)
    theirs = PlainOVModel.from_pretrained(folder, ov_config=F32)
    batch = dict(AutoTokenizer.from_pretrained(folder)(TEXTS, padding=True, return_tensors="np"))
    expected = theirs(**{k: v for k, v in batch.items() if k in theirs.input_names}).logits
    assert np.ptp(expected) > 0, "a constant output would make the parity checks below meaningless"
    yield ours, theirs, batch, expected
    ours.exits_enabled, ours.exit_threshold = True, family[2].threshold


def test_family_list_covers_every_adapter():
    assert sorted(ENCODER_FAMILIES) == sorted(ADAPTERS)


def test_automatic_selection_keeps_candidate_exits(family):
    _, folder, config = family
    assert config.exit_layers and set(config.exit_layers) <= set(range(1, NUM_LAYERS))
    assert len(config.segments) == len(config.exit_layers) + 1
    assert all((folder / s).is_file() for s in config.segments)


def test_first_segment_takes_optimum_intels_inputs(loaded):
    ours, theirs, _, _ = loaded
    model_inputs = {"input_ids", "attention_mask", "token_type_ids"}
    assert ours.early_exit.first_inputs & model_inputs == set(theirs.input_names)


def test_exits_disabled_equal_optimum_intel(loaded):
    ours, _, batch, expected = loaded
    ours.exits_enabled = False
    out = ours(**batch)
    np.testing.assert_allclose(out.logits, expected, rtol=1e-3, atol=1e-6)
    assert (out.exit_layers == NUM_LAYERS).all()


def test_segments_without_exits_equal_optimum_intel(loaded):
    """Every segment in turn (threshold 1: no exit taken) gives optimum-intel's logits: the cut is faithful. The tiny
    models' logits are of order 1e-2, so the tolerance is relative."""
    ours, _, batch, expected = loaded
    ours.exits_enabled, ours.exit_threshold = True, 1.0
    out = ours(**batch)
    assert (out.exit_layers == NUM_LAYERS).all()
    np.testing.assert_allclose(out.logits, expected, rtol=1e-3, atol=1e-6)


def test_threshold_zero_exits_every_sample_at_the_first_exit(family, loaded):
    ours, _, batch, _ = loaded
    ours.exits_enabled, ours.exit_threshold = True, 0.0
    out = ours(**batch)
    assert (out.exit_layers == family[2].exit_layers[0]).all()
    assert np.isfinite(out.logits).all()


def test_unsupported_family_is_refused_before_training(tmp_path):
    source = make_tiny_bert(tmp_path / "hf", num_layers=2, model_type="bert")
    config = source / "config.json"
    config.write_text(config.read_text().replace('"model_type": "bert"', '"model_type": "ernie"'))
    with pytest.raises(ValueError, match="does not support model type 'ernie'"):
        export_early_exit(source, tmp_path / "out", train_data=TextDataset(["good day"]))


def test_albert_with_several_layers_per_group_is_refused():
    torch.manual_seed(0)
    config = AlbertConfig(
        vocab_size=40,
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        inner_group_num=2,
    )
    with pytest.raises(ValueError, match="inner_group_num=2"):
        get_adapter(AlbertForSequenceClassification(config))
