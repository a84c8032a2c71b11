"""NNCF stacked on early exit: every part is compressed, through quantization_config= and the flags."""

import numpy as np
import openvino as ov
import pytest
from conftest import F32
from optimum.intel import OVQuantizationConfig, OVWeightQuantizationConfig
from tiny_models import random_texts
from transformers import AutoTokenizer

from optimum_dynexec import OVModelForSequenceClassification, export_early_exit
from optimum_dynexec.configuration import load_dynexec_config
from optimum_dynexec.exporters.quantization import quantization_config_from_flags


def low_precision_constants(path) -> int:
    model = ov.Core().read_model(path)
    return sum(
        op.get_type_name() == "Constant" and op.get_element_type() in (ov.Type.i8, ov.Type.u8)
        for op in model.get_ops()
    )


def fake_quantizes(path) -> int:
    return sum(op.get_type_name() == "FakeQuantize" for op in ov.Core().read_model(path).get_ops())


@pytest.mark.parametrize(
    "qconfig, record",
    [
        (OVWeightQuantizationConfig(bits=8), {"weight_format": "int8", "sym": False}),
        (OVQuantizationConfig(bits=8, num_samples=24), {"quant_mode": "int8", "num_samples": 24}),
    ],
)
def test_every_part_is_compressed(tiny_bert, tiny_train_file, tmp_path, qconfig, record):
    config = export_early_exit(
        tiny_bert,
        tmp_path,
        exit_layers=[1, 2],
        train_file=tiny_train_file,
        quantization_config=qconfig,
        max_train_samples=150,
    )
    assert config.quantization == record
    for part in ["openvino_model.xml", *config.segments]:
        assert low_precision_constants(tmp_path / part) > 0, part
        if "quant_mode" in record:
            assert fake_quantizes(tmp_path / part) > 0, part
    model = OVModelForSequenceClassification.from_pretrained(tmp_path, ov_config=F32)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    enc = tokenizer(random_texts(8, seed=3), padding=True, return_tensors="np")
    model.exit_threshold = 1.0
    full_path = model(**enc).logits
    model.exits_enabled = False
    # the compressed segments, run to the end, match the compressed full model closely
    np.testing.assert_allclose(full_path, model(**enc).logits, atol=0.05)
    assert load_dynexec_config(tmp_path).calibration is not None


def test_flags_map_to_optimum_intel_configs():
    assert isinstance(quantization_config_from_flags("int8"), OVQuantizationConfig)
    int4 = quantization_config_from_flags(weight_format="int4")
    # layers narrower than, or not a multiple of, the INT4 group get an adjusted group (SmolLM2 has 576-wide ones)
    assert int4.bits == 4 and int4.group_size_fallback == "adjust"
    assert quantization_config_from_flags(weight_format="fp32") is None
    with pytest.raises(ValueError, match="not both"):
        quantization_config_from_flags("int8", "int8")
    with pytest.raises(ValueError, match="quant-mode"):
        quantization_config_from_flags("int4")


def test_unknown_quantization_config_type(tiny_bert, tiny_train_file, tmp_path):
    with pytest.raises(TypeError, match="OVQuantizationConfig"):
        export_early_exit(tiny_bert, tmp_path, train_file=tiny_train_file, quantization_config={"bits": 8})
