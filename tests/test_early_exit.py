"""Early-exit runtime on a tiny random BERT: parity with optimum-intel, exits, batch compaction, bad input."""

import dataclasses
import re

import huggingface_hub
import numpy as np
import openvino as ov
import pytest
import torch
from conftest import F32
from optimum.intel import OVModelForSequenceClassification as PlainOVModel
from tiny_models import random_texts
from transformers import AutoTokenizer
from transformers.modeling_outputs import SequenceClassifierOutput

from optimum_dynexec import EarlyExitClassifierOutput, OVModelForSequenceClassification, export_early_exit
from optimum_dynexec.configuration import load_dynexec_config
from optimum_dynexec.early_exit_engine import EarlyExitEngine
from optimum_dynexec.exporters.early_exit import regroup_segments


@pytest.fixture(scope="module")
def tokenizer(tiny_early_exit):
    return AutoTokenizer.from_pretrained(tiny_early_exit)


@pytest.fixture(scope="module")
def model(tiny_early_exit):
    return OVModelForSequenceClassification.from_pretrained(tiny_early_exit, ov_config=F32)


@pytest.fixture(scope="module")
def plain(tiny_early_exit):
    return PlainOVModel.from_pretrained(tiny_early_exit, ov_config=F32)


@pytest.fixture(autouse=True)
def reset(model):
    threshold = load_dynexec_config(model.model_save_dir).threshold
    yield
    model.exits_enabled = True
    model.exit_threshold = threshold


TEXTS = random_texts(24, seed=7)


def test_export_writes_segments_and_calibrated_config(tiny_early_exit):
    config = load_dynexec_config(tiny_early_exit)
    assert config.exit_layers == [1, 2, 3] and config.num_hidden_layers == 4
    assert all((tiny_early_exit / s).is_file() for s in config.segments)
    assert (tiny_early_exit / "openvino_model.xml").is_file()
    assert config.calibration["agreement"] >= 0.9 and config.calibration["num_samples"] == 40


def test_exits_disabled_equals_optimum_intel(model, plain, tokenizer):
    enc = tokenizer(TEXTS, padding=True, return_tensors="np")
    model.exits_enabled = False
    out = model(**enc)
    np.testing.assert_allclose(out.logits, plain(**enc).logits, atol=1e-4)
    assert (out.exit_layers == 4).all()


def test_segments_without_exits_equal_optimum_intel(model, plain, tokenizer):
    enc = tokenizer(TEXTS, padding=True, return_tensors="np")
    model.exit_threshold = 1.0
    out = model(**enc)
    assert isinstance(out, EarlyExitClassifierOutput)
    assert out.logits.shape == (len(TEXTS), 2) and out.exit_layers.dtype == np.int64
    assert (out.exit_layers == 4).all()
    np.testing.assert_allclose(out.logits, plain(**enc).logits, atol=1e-4)


def test_threshold_zero_exits_everyone_at_first_layer(model, tokenizer):
    model.exit_threshold = 0.0
    out = model(**tokenizer(TEXTS, padding=True, return_tensors="np"))
    assert (out.exit_layers == 1).all()


def test_batch_gives_each_sample_its_own_result(model, tokenizer):
    out = model(**tokenizer(TEXTS, padding=True, return_tensors="np"))
    assert len(set(out.exit_layers.tolist())) > 1, (
        "the calibrated threshold should make samples exit at several layers"
    )
    for i, text in enumerate(TEXTS):
        alone = model(**tokenizer([text], return_tensors="np"))
        assert alone.exit_layers[0] == out.exit_layers[i]
        np.testing.assert_allclose(alone.logits[0], out.logits[i], atol=1e-5)


def test_extra_padding_changes_nothing(model, tokenizer):
    enc = tokenizer(TEXTS, padding=True, return_tensors="np")
    longer = tokenizer(TEXTS, padding="max_length", max_length=60, return_tensors="np")
    a, b = model(**enc), model(**longer)
    np.testing.assert_array_equal(a.exit_layers, b.exit_layers)
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-5)


def test_torch_inputs_give_torch_outputs(model, tokenizer):
    out = model(**tokenizer(TEXTS[:3], padding=True, return_tensors="pt"))
    assert isinstance(out.logits, torch.Tensor) and isinstance(out.exit_layers, torch.Tensor)


def test_threshold_at_load_and_after(tiny_early_exit, tokenizer):
    m = OVModelForSequenceClassification.from_pretrained(tiny_early_exit, ov_config=F32, exit_threshold=0.0)
    assert m.exit_threshold == 0.0
    enc = tokenizer(TEXTS, padding=True, return_tensors="np")
    assert (m(**enc).exit_layers == 1).all()
    m.exit_threshold = 1.0
    assert (m(**enc).exit_layers == 4).all()
    m.exit_criterion = "entropy"
    assert m.exit_config.criterion == "entropy"


def test_save_pretrained_round_trip(model, tokenizer, tmp_path):
    model.exit_threshold = 0.75
    model.save_pretrained(tmp_path)
    again = OVModelForSequenceClassification.from_pretrained(tmp_path, ov_config=F32)
    assert again.exit_threshold == 0.75 and again.exit_config.exit_layers == model.exit_config.exit_layers
    enc = tokenizer(TEXTS, padding=True, return_tensors="np")
    a, b = model(**enc), again(**enc)
    np.testing.assert_array_equal(a.exit_layers, b.exit_layers)
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-6)


def test_plain_folder_behaves_as_optimum_intel(tiny_bert, tmp_path, tokenizer):
    plain_dir = tmp_path / "plain"
    PlainOVModel.from_pretrained(tiny_bert, export=True).save_pretrained(plain_dir)
    ours = OVModelForSequenceClassification.from_pretrained(plain_dir, ov_config=F32)
    theirs = PlainOVModel.from_pretrained(plain_dir, ov_config=F32)
    enc = tokenizer(TEXTS, padding=True, return_tensors="np")
    out = ours(**enc)
    assert type(out) is SequenceClassifierOutput and not ours.has_early_exit
    np.testing.assert_array_equal(out.logits, theirs(**enc).logits)
    with pytest.raises(ValueError, match="no exit heads"):
        OVModelForSequenceClassification.from_pretrained(plain_dir, exit_threshold=0.9)
    with pytest.raises(ValueError, match="no exit heads"):
        ours.exit_threshold = 0.9
    with pytest.raises(ValueError, match="no exit heads"):
        ours.exits_enabled = True


@pytest.mark.parametrize("bad", [-0.01, 1.01, "high"])
def test_threshold_out_of_range(model, tiny_early_exit, bad):
    with pytest.raises(ValueError, match="threshold"):
        model.exit_threshold = bad
    with pytest.raises(ValueError, match="threshold"):
        OVModelForSequenceClassification.from_pretrained(tiny_early_exit, exit_threshold=bad)


def test_empty_batch(model):
    with pytest.raises(ValueError, match="Empty batch"):
        model(input_ids=np.zeros((0, 5), dtype=np.int64), attention_mask=np.zeros((0, 5), dtype=np.int64))


def test_too_long_input_names_truncation(model, tokenizer):
    enc = tokenizer([" ".join(["good"] * 100)], return_tensors="np")
    with pytest.raises(ValueError, match="truncation=True, max_length=64"):
        model(**enc)
    ok = tokenizer([" ".join(["good"] * 100)], truncation=True, max_length=64, return_tensors="np")
    assert model(**ok).logits.shape == (1, 2)


def test_mismatched_tokenizer(model, tokenizer):
    ids = np.array([[2, 5, 500, 3]])
    with pytest.raises(ValueError, match="tokenizer does not match"):
        model(input_ids=ids, attention_mask=np.ones_like(ids))
    model.check_tokenizer(tokenizer)
    big = AutoTokenizer.from_pretrained(model.model_save_dir)
    big.add_tokens([f"extra{i}" for i in range(50)])
    with pytest.raises(ValueError, match="do not match"):
        model.check_tokenizer(big)


def test_mask_shape_mismatch(model):
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(input_ids=np.array([[2, 5, 3]]), attention_mask=np.array([[1, 1]]))


def test_export_needs_text_or_heads(tiny_bert, tmp_path):
    with pytest.raises(ValueError, match="--train-file"):
        export_early_exit(tiny_bert, tmp_path / "out")


def test_export_rejects_bad_exit_layers(tiny_bert, tiny_train_file, tmp_path):
    with pytest.raises(ValueError, match="exit_layers"):
        export_early_exit(tiny_bert, tmp_path / "out", exit_layers=[2, 4], train_file=tiny_train_file)


def test_chosen_exit_layers(tiny_bert, tiny_train_file, tmp_path, tokenizer):
    config = export_early_exit(tiny_bert, tmp_path, exit_layers=[2], train_file=tiny_train_file, max_train_samples=100)
    assert config.exit_layers == [2] and len(config.segments) == 2
    m = OVModelForSequenceClassification.from_pretrained(tmp_path, ov_config=F32, exit_threshold=0.0)
    assert set(m(**tokenizer(TEXTS, padding=True, return_tensors="np")).exit_layers.tolist()) == {2}


def test_auto_exit_layers_keep_a_subset_that_runs(tiny_bert, tiny_train_file, tmp_path, tokenizer):
    config = export_early_exit(tiny_bert, tmp_path, train_file=tiny_train_file, max_train_samples=200)
    assert config.exit_layers and set(config.exit_layers) <= {1, 2, 3}
    assert len(config.segments) == len(config.exit_layers) + 1
    m = OVModelForSequenceClassification.from_pretrained(tmp_path, ov_config=F32)
    out = m(**tokenizer(TEXTS, padding=True, return_tensors="np"))
    assert set(out.exit_layers.tolist()) <= {*config.exit_layers, 4}


def test_hub_id_loads_as_optimum_intel(tiny_early_exit, tmp_path, tokenizer, monkeypatch):
    """A model id that is not a local folder goes through optimum-intel's own lookup (here its offline hub cache);
    the exit parts are read from local folders only, so it runs as optimum-intel's class."""
    snapshot = tmp_path / "models--dynexec-tests--tiny" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in ("config.json", "openvino_model.xml", "openvino_model.bin"):
        (snapshot / name).write_bytes((tiny_early_exit / name).read_bytes())
    (tmp_path / "models--dynexec-tests--tiny" / "refs").mkdir()
    (tmp_path / "models--dynexec-tests--tiny" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    ours = OVModelForSequenceClassification.from_pretrained(
        "dynexec-tests/tiny", cache_dir=str(tmp_path), ov_config=F32
    )
    theirs = PlainOVModel.from_pretrained("dynexec-tests/tiny", cache_dir=str(tmp_path), ov_config=F32)
    assert not ours.has_early_exit and ours.model_save_dir == theirs.model_save_dir == snapshot
    enc = tokenizer(TEXTS, padding=True, return_tensors="np")
    np.testing.assert_array_equal(ours(**enc).logits, theirs(**enc).logits)
    with pytest.raises(ValueError, match="no exit heads"):
        OVModelForSequenceClassification.from_pretrained(
            "dynexec-tests/tiny", cache_dir=str(tmp_path), exit_threshold=0.5
        )


def test_export_true_on_a_transformers_folder(tiny_bert, plain, tokenizer):
    """`export=True` goes through optimum-intel's export hook and then this class's loading hook; an error names the
    transformers folder, not the export's temporary one. (`plain` is optimum-intel's export of the same model.)"""
    ours = OVModelForSequenceClassification.from_pretrained(tiny_bert, export=True, ov_config=F32)
    assert isinstance(ours, OVModelForSequenceClassification) and not ours.has_early_exit
    enc = tokenizer(TEXTS, padding=True, return_tensors="np")
    np.testing.assert_allclose(ours(**enc).logits, plain(**enc).logits, atol=1e-6)
    with pytest.raises(ValueError, match=f"{re.escape(str(tiny_bert))}/? has no exit heads"):
        OVModelForSequenceClassification.from_pretrained(tiny_bert, export=True, exit_threshold=0.5)


def test_joined_segments_run_as_the_parts(tiny_early_exit, plain, tokenizer):
    """Segments joined in OpenVINO (how the automatic selection keeps a subset of exits) give optimum-intel's logits
    through every segment, and the head they end with gives what it gave before the join."""
    core = ov.Core()
    config = load_dynexec_config(tiny_early_exit)
    parts = [core.read_model(tiny_early_exit / s) for s in config.segments]  # exits after 1, 2, 3
    kept = dataclasses.replace(config, exit_layers=[2], segments=[])
    joined = EarlyExitEngine(regroup_segments(parts, config.exit_layers, [2]), kept)
    separate = EarlyExitEngine(parts, config)
    for engine in (joined, separate):
        engine.compile(core, "CPU", F32)
    enc = tokenizer(TEXTS, padding=True, return_tensors="np")
    feeds = joined.first_feeds(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    layer_logits, _ = joined.run_all(feeds)
    np.testing.assert_allclose(layer_logits[0], separate.run_all(feeds)[0][1], atol=1e-6)  # the head after layer 2
    np.testing.assert_allclose(layer_logits[1], plain(**enc).logits, atol=1e-5)
    assert len(joined.models[0].inputs) == 3 and [o.get_any_name() for o in joined.models[1].outputs] == ["logits"]
