"""NNCF through optimum-intel's own flag helpers: every option reaches the config, bad values are named, every part of
an early-exit model is compressed, and `compress` runs optimum-intel's own routines on our IR."""

import argparse

import nncf
import numpy as np
import openvino as ov
import pytest
from conftest import F32
from openvino import opset13 as ops
from optimum.commands.export.openvino import parse_args_openvino, prepare_q_config, prepare_wc_config
from optimum.intel import OVConfig, OVMixedQuantizationConfig, OVQuantizationConfig, OVWeightQuantizationConfig
from optimum.intel.openvino.configuration import _DEFAULT_4BIT_WQ_CONFIG
from tiny_models import random_texts
from transformers import AutoTokenizer

from optimum_dynexec import OVModelForSequenceClassification, export_early_exit
from optimum_dynexec.configuration import load_dynexec_config
from optimum_dynexec.exporters.diffusion import diffusion_quantization_config
from optimum_dynexec.exporters.quantization import (
    WEIGHT_FORMATS,
    compress,
    describe,
    is_data_aware,
    needs_calibration,
    quantization_config_from_flags,
)


def low_precision_constants(path, types=(ov.Type.i8, ov.Type.u8)) -> int:
    model = path if isinstance(path, ov.Model) else ov.Core().read_model(path)
    return sum(op.get_type_name() == "Constant" and op.get_element_type() in types for op in model.get_ops())


def ops_of_type(model, name: str) -> int:
    model = model if isinstance(model, ov.Model) else ov.Core().read_model(model)
    return sum(op.get_type_name() == name for op in model.get_ops())


@pytest.mark.parametrize(
    "qconfig, record",
    [
        (OVWeightQuantizationConfig(bits=8), {"weight_format": "int8"}),
        (OVQuantizationConfig(bits=8, num_samples=24), {"quant_mode": "int8"}),
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
            assert ops_of_type(tmp_path / part, "FakeQuantize") > 0, part
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
    # optimum-intel's own default INT4 config, no model-specific fallback in generic code
    assert (int4.bits, int4.group_size, int4.ratio, int4.sym, int4.group_size_fallback) == (4, 128, 1.0, False, None)
    assert quantization_config_from_flags(weight_format="fp32") is None
    assert quantization_config_from_flags() is None
    assert quantization_config_from_flags(weight_format="int4", group_size_fallback="adjust").group_size_fallback == (
        "adjust"
    )
    with pytest.raises(ValueError, match="not both"):
        quantization_config_from_flags("int8", "int8")
    with pytest.raises(ValueError, match="quant-mode"):
        quantization_config_from_flags("int4")
    assert "fp16" not in WEIGHT_FORMATS and {"int8", "int4", "nf4", "mxfp4", "cb4"} <= set(WEIGHT_FORMATS)


def test_every_option_reaches_the_nncf_call():
    config = quantization_config_from_flags(
        weight_format="int4",
        group_size=16,
        ratio=0.5,
        sym=True,
        all_layers=True,
        group_size_fallback="adjust",
        backup_precision="int8_sym",
        awq=True,
        sensitivity_metric="mean_activation_magnitude",
        num_samples=12,
    )
    assert isinstance(config, OVWeightQuantizationConfig)
    nncf_kwargs = config.to_nncf_dict()
    assert nncf_kwargs["mode"] == nncf.CompressWeightsMode.INT4_SYM and nncf_kwargs["group_size"] == 16
    assert nncf_kwargs["ratio"] == 0.5 and nncf_kwargs["all_layers"] and nncf_kwargs["awq"]
    assert nncf_kwargs["backup_mode"] == nncf.BackupMode.INT8_SYM and nncf_kwargs["subset_size"] == 12
    assert nncf_kwargs["sensitivity_metric"] == nncf.SensitivityMetric.MEAN_ACTIVATION_MAGNITUDE
    assert nncf_kwargs["advanced_parameters"].group_size_fallback_mode == nncf.GroupSizeFallbackMode.ADJUST
    assert describe(config) == {
        "weight_format": "int4",
        "group_size": 16,
        "ratio": 0.5,
        "sym": True,
        "all_layers": True,
        "group_size_fallback": "adjust",
        "backup_precision": "int8_sym",
        "awq": True,
        "sensitivity_metric": "mean_activation_magnitude",
    }
    assert needs_calibration(config) and is_data_aware(config)  # an activation-ranked ratio needs data

    data_driven = quantization_config_from_flags(
        weight_format="int4", scale_estimation=True, gptq=True, dataset="wikitext2", task="text-generation-with-past"
    )
    assert data_driven.to_nncf_dict()["scale_estimation"] and data_driven.to_nncf_dict()["gptq"]
    assert describe(data_driven)["dataset"] == "wikitext2" and needs_calibration(data_driven)
    lora = quantization_config_from_flags(weight_format="nf4", lora_correction=True, dataset=["a text", "another"])
    assert lora.to_nncf_dict()["mode"] == nncf.CompressWeightsMode.NF4 and lora.to_nncf_dict()["lora_correction"]
    assert lora.dataset == ["a text", "another"] and "dataset" not in describe(lora)

    fp8 = quantization_config_from_flags("f8e4m3", smooth_quant_alpha=0.5, num_samples=7)
    assert isinstance(fp8, OVQuantizationConfig) and fp8.to_nncf_dict()["mode"] == nncf.QuantizationMode.FP8_E4M3
    assert fp8.to_nncf_dict()["advanced_parameters"].smooth_quant_alphas.matmul == 0.5
    assert describe(fp8) == {"quant_mode": "f8e4m3", "sym": True, "smooth_quant_alpha": 0.5}
    int8_sym = quantization_config_from_flags("int8", sym=True)
    assert int8_sym.to_nncf_dict()["preset"] == nncf.QuantizationPreset.PERFORMANCE

    mixed = quantization_config_from_flags("int4_f8e4m3", group_size=16, sym=True)
    assert isinstance(mixed, OVMixedQuantizationConfig)
    assert mixed.weight_quantization_config.dtype == "int4" and mixed.weight_quantization_config.group_size == 16
    assert mixed.full_quantization_config.dtype == "f8e4m3"
    assert describe(mixed) == {
        "quant_mode": "int4_f8e4m3",
        # optimum-intel keeps the backup layers in float for the FP8 step
        "weights": {"weight_format": "int4", "group_size": 16, "sym": True, "backup_precision": "none"},
        "activations": {"quant_mode": "f8e4m3", "sym": True},
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["--weight-format", "int4"],
        ["--weight-format", "int8", "--sym"],
        ["--weight-format", "int4", "--group-size", "16", "--ratio", "0.5", "--sym", "--all-layers"],
        ["--weight-format", "int4", "--awq", "--scale-estimation", "--dataset", "wikitext2", "--num-samples", "8"],
        ["--weight-format", "mxfp4", "--group-size", "32"],
        ["--weight-format", "int4", "--backup-precision", "none", "--group-size-fallback", "ignore"],
        ["--quant-mode", "int8", "--dataset", "wikitext2", "--smooth-quant-alpha", "0.6"],
        ["--quant-mode", "f8e5m2", "--dataset", "wikitext2"],
        ["--quant-mode", "int4_f8e5m2", "--dataset", "wikitext2", "--group-size", "32"],
    ],
)
def test_same_config_as_optimum_cli(argv):
    """Ours equals what optimum-cli's own helpers build from the same command line."""
    parser = argparse.ArgumentParser()
    parse_args_openvino(parser)
    args = parser.parse_args(["-m", "some-model", "out", *argv])
    if args.weight_format is not None:
        expected = prepare_wc_config(args, _DEFAULT_4BIT_WQ_CONFIG)
        if argv == ["--weight-format", "int4"]:
            expected = dict(_DEFAULT_4BIT_WQ_CONFIG)
    elif "_" in args.quant_mode:
        weights, activations = prepare_wc_config(args, _DEFAULT_4BIT_WQ_CONFIG), prepare_q_config(args)
        weights["dtype"], activations["dtype"] = args.quant_mode.split("_")
        expected = {
            "weight_quantization_config": weights,
            "full_quantization_config": activations,
            "num_samples": args.num_samples,
            "dataset": args.dataset,
        }
    else:
        expected = prepare_q_config(args)
    expected = OVConfig(quantization_config=expected).quantization_config
    ours = quantization_config_from_flags(
        **{k: getattr(args, k) for k in ("weight_format", "quant_mode", "num_samples")},
        **{
            k: getattr(args, k)
            for k in (
                "group_size ratio sym all_layers group_size_fallback backup_precision awq scale_estimation gptq "
                "lora_correction sensitivity_metric dataset smooth_quant_alpha quantization_statistics_path"
            ).split()
        },
        task="text-generation-with-past",
    )
    assert type(ours) is type(expected)
    drop = {"weight_only"}
    assert {k: v for k, v in ours.to_dict().items() if k not in drop} == {
        k: v for k, v in expected.to_dict().items() if k not in drop
    }


def test_optimum_intel_default_configs_by_model_name(tmp_path):
    # optimum-intel recommends configs per model id (found by id, config `_name_or_path` or folder name)
    jais = quantization_config_from_flags(weight_format="int4", model=tmp_path / "jais-13b")
    assert jais.group_size_fallback == "adjust" and jais.group_size == 128
    coder = quantization_config_from_flags(weight_format="int8", model=tmp_path / "Qwen2.5-Coder-3B-Instruct")
    assert coder.dq_group_size == 128 and describe(coder) == {"weight_format": "int8", "dq_group_size": 128}
    # as in optimum-cli, any option means the flags decide
    assert quantization_config_from_flags(weight_format="int4", sym=True, model=tmp_path / "jais-13b").sym
    t5 = quantization_config_from_flags("int8", model="google-t5/t5-small", task="text-generation-with-past")
    assert isinstance(t5, OVQuantizationConfig) and t5.smooth_quant_alpha == -1 and t5.dataset == "wikitext2"


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"weight_format": "int3"}, "--weight-format 'int3'"),
        ({"weight_format": "fp16"}, "--weight-format fp16"),
        ({"quant_mode": "int4"}, "--quant-mode 'int4'"),
        ({"quant_mode": "hybrid"}, "--quant-mode 'hybrid'"),
        ({"weight_format": "int4", "backup_precision": "int4"}, "--backup-precision 'int4'"),
        ({"weight_format": "int4", "group_size_fallback": "shrink"}, "--group-size-fallback 'shrink'"),
        ({"weight_format": "int4", "sensitivity_metric": "loss"}, "--sensitivity-metric 'loss'"),
        ({"weight_format": "int4", "ratio": 1.5}, "--ratio 1.5"),
        ({"weight_format": "int4", "group_size": 0}, "--group-size 0"),
        ({"weight_format": "int8", "awq": True}, "--awq"),
        ({"weight_format": "int4", "gptq": True, "lora_correction": True}, "--gptq --lora-correction"),
        ({"quant_mode": "int8", "num_samples": 0}, "--num-samples 0"),
        ({"quant_mode": "int8", "smooth_quant_alpha": 3.0}, "--smooth-quant-alpha 3.0"),
        ({"group_size": 64}, "--group-size 64"),
        (
            {"weight_format": "int4", "dataset": "imagenet", "task": "text-generation-with-past"},
            "--dataset 'imagenet'",
        ),
        ({"weight_format": "int8", "dataset": "wikitext2", "task": "text-classification"}, "--dataset"),
        ({"weight_format": "int4", "task": "text-to-image"}, "--weight-format 'int4'"),
        ({"quant_mode": "int4_f8e4m3", "task": "text-to-image"}, "--quant-mode 'int4_f8e4m3'"),
    ],
)
def test_bad_values_name_the_flag(kwargs, flag):
    with pytest.raises(ValueError) as error:
        quantization_config_from_flags(**kwargs)
    assert flag in str(error.value)
    if "'" in flag:  # a value outside a list: the message gives the list
        assert "choose one of" in str(error.value)


def test_diffusion_modes():
    prompts = ["a bag", "a shoe"]
    hybrid = diffusion_quantization_config("hybrid", calibration_prompts=prompts, num_samples=2)
    assert hybrid.quant_method.value == "hybrid" and hybrid.dataset == prompts and hybrid.bits == 8
    assert describe(hybrid) == {"quant_mode": "hybrid"}
    # optimum-cli's own way to ask for hybrid on a pipeline: weights with a dataset
    named = diffusion_quantization_config(weight_format="int8", dataset="conceptual_captions")
    assert describe(named) == {"quant_mode": "hybrid", "dataset": "conceptual_captions"}
    full = diffusion_quantization_config("int8", calibration_prompts=prompts)
    assert isinstance(full, OVQuantizationConfig) and full.dataset == prompts
    with pytest.raises(ValueError, match="calibration prompts"):
        diffusion_quantization_config("f8e4m3")


def tiny_ir(width: int = 96, seed: int = 0) -> ov.Model:
    """x (1, n, width) -> MatMul(width, 64) -> Relu -> MatMul(64, 8): two weighted layers, one `width` wide."""
    rng = np.random.default_rng(seed)
    x = ops.parameter([1, -1, width], ov.Type.f32, name="x")
    w1 = ops.constant(rng.normal(size=(width, 64)).astype(np.float32))
    w2 = ops.constant(rng.normal(size=(64, 8)).astype(np.float32))
    out = ops.matmul(ops.relu(ops.matmul(x, w1, False, False)), w2, False, False)
    return ov.Model([out], [x], "tiny")


def feeds(n: int = 6, width: int = 96) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"x": rng.normal(size=(1, 4, width)).astype(np.float32)} for _ in range(n)]


def test_group_size_fallback_is_the_documented_remedy():
    with pytest.raises(ValueError, match="--group-size-fallback adjust"):
        compress(tiny_ir(), quantization_config_from_flags(weight_format="int4", group_size=64, all_layers=True))
    adjusted = compress(
        tiny_ir(),
        quantization_config_from_flags(
            weight_format="int4", group_size=64, all_layers=True, group_size_fallback="adjust"
        ),
    )
    int4 = [
        op for op in adjusted.get_ops() if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.u4
    ]
    shapes = {tuple(op.get_output_shape(0)) for op in int4}
    assert (3, 32, 64) in shapes and (1, 64, 8) in shapes  # the 96-wide layer in groups of 32, the other of 64


@pytest.mark.parametrize(
    "flags, op",
    [
        ({"quant_mode": "int8"}, "FakeQuantize"),
        ({"quant_mode": "f8e4m3"}, "FakeConvert"),
        ({"quant_mode": "int4_f8e4m3", "group_size": 32, "all_layers": True}, "FakeConvert"),
        ({"weight_format": "int4", "group_size": 32, "scale_estimation": True}, None),
    ],
)
def test_compress_runs_optimum_intels_routines(flags, op):
    config = quantization_config_from_flags(**flags)
    with pytest.raises(ValueError, match="calibration inputs"):
        compress(tiny_ir(), config)
    model = compress(tiny_ir(), config, feeds())
    if op is not None:
        assert ops_of_type(model, op) > 0
    assert low_precision_constants(model, (ov.Type.i8, ov.Type.u8, ov.Type.u4, ov.Type.i4, ov.Type.f8e4m3)) > 0
    out = ov.Core().compile_model(model, "CPU").create_infer_request().infer(feeds(1)[0])
    assert np.isfinite(next(iter(out.values()))).all()


def test_unknown_quantization_config_type(tiny_bert, tiny_train_file, tmp_path):
    with pytest.raises(TypeError, match="OVQuantizationConfig"):
        export_early_exit(tiny_bert, tmp_path, train_file=tiny_train_file, quantization_config={"bits": 8})
