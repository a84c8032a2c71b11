"""`optimum-cli export dynexec` round trips and clean errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
from conftest import F32
from transformers import AutoTokenizer

from optimum_dynexec import OVModelForSequenceClassification
from optimum_dynexec.configuration import load_dynexec_config

CLI = [str(Path(sys.executable).parent / "optimum-cli"), "export", "dynexec"]


def run_cli(*args):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600)


def test_command_is_registered():
    result = run_cli("--help")
    assert result.returncode == 0 and "--exit-layers" in result.stdout and "--quant-mode" in result.stdout
    # optimum-cli export openvino's compression options, with its own choices
    for flag in ("--group-size", "--group-size-fallback", "--ratio", "--sym", "--all-layers", "--dataset", "--awq"):
        assert flag in result.stdout, flag
    for flag in ("--scale-estimation", "--gptq", "--lora-correction", "--sensitivity-metric", "--backup-precision"):
        assert flag in result.stdout, flag
    assert "f8e4m3" in result.stdout and "hybrid" in result.stdout and "nf4" in result.stdout


def test_round_trip(tiny_bert, tiny_train_file, tmp_path):
    out = tmp_path / "ee"
    result = run_cli(
        "--model",
        tiny_bert,
        "--task",
        "text-classification",
        "--exit-layers",
        1,
        3,
        "--train-file",
        tiny_train_file,
        "--target-agreement",
        0.95,
        out,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    config = load_dynexec_config(out)
    assert config.exit_layers == [1, 3] and config.target_agreement == 0.95
    assert config.calibration["agreement"] >= 0.95
    model = OVModelForSequenceClassification.from_pretrained(out, ov_config=F32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    res = model(**tokenizer(["good film", "bad plot very bad"], padding=True, return_tensors="np"))
    assert res.logits.shape == (2, 2) and set(res.exit_layers.tolist()) <= {1, 3, 4}
    assert model.exit_threshold == config.threshold


def test_csv_with_labels(tiny_bert, tmp_path):
    csv = tmp_path / "train.csv"
    rows = ["text,label"] + [f"{'good great' if i % 2 else 'bad awful'} film {i % 7},{i % 2}" for i in range(120)]
    csv.write_text("\n".join(rows) + "\n")
    result = run_cli(
        "--model",
        tiny_bert,
        "--task",
        "text-classification",
        "--exit-layers",
        2,
        "--train-file",
        csv,
        tmp_path / "out",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_dynexec_config(tmp_path / "out").exit_layers == [2]


def test_missing_train_file_is_a_clean_error(tiny_bert, tmp_path):
    result = run_cli(
        "--model", tiny_bert, "--task", "text-classification", "--train-file", tmp_path / "nope.txt", tmp_path / "out"
    )
    assert result.returncode == 2
    assert "nope.txt does not exist" in result.stderr and "Traceback" not in result.stderr


def test_bad_exit_layers_is_a_clean_error(tiny_bert, tiny_train_file, tmp_path):
    result = run_cli(
        "--model",
        tiny_bert,
        "--task",
        "text-classification",
        "--exit-layers",
        "first",
        "--train-file",
        tiny_train_file,
        tmp_path / "out",
    )
    assert result.returncode == 2 and "--exit-layers takes" in result.stderr and "Traceback" not in result.stderr


def test_no_text_is_a_clean_error(tiny_bert, tmp_path):
    result = run_cli("--model", tiny_bert, "--task", "text-classification", tmp_path / "out")
    assert result.returncode == 2 and "--train-file" in result.stderr and "Traceback" not in result.stderr


def test_both_quantization_flags_is_a_clean_error(tiny_bert, tiny_train_file, tmp_path):
    result = run_cli(
        "--model",
        tiny_bert,
        "--task",
        "text-classification",
        "--train-file",
        tiny_train_file,
        "--quant-mode",
        "int8",
        "--weight-format",
        "int8",
        tmp_path / "out",
    )
    assert result.returncode == 2 and "not both" in result.stderr


def test_quantized_round_trip(tiny_bert, tiny_train_file, tmp_path):
    out = tmp_path / "int8"
    result = run_cli(
        "--model",
        tiny_bert,
        "--task",
        "text-classification",
        "--train-file",
        tiny_train_file,
        "--quant-mode",
        "int8",
        "--num-samples",
        32,
        "--max-train-samples",
        200,
        out,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_dynexec_config(out).quantization == {"quant_mode": "int8"}
    model = OVModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert np.isfinite(model(**tokenizer(["good film"], return_tensors="np")).logits).all()


def test_int4_options_reach_every_part(tiny_bert, tiny_train_file, tmp_path):
    """The tiny BERT's 37-wide feed-forward output fits no INT4 group: `--group-size-fallback adjust` is the remedy."""
    out = tmp_path / "int4"
    flags = ["--weight-format", "int4", "--group-size", 16, "--ratio", 0.5, "--sym", "--group-size-fallback", "adjust"]
    result = run_cli(
        "--model",
        tiny_bert,
        "--task",
        "text-classification",
        "--exit-layers",
        2,
        "--train-file",
        tiny_train_file,
        "--max-train-samples",
        120,
        *flags,
        out,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    config = load_dynexec_config(out)
    assert config.quantization == {
        "weight_format": "int4",
        "group_size": 16,
        "ratio": 0.5,
        "sym": True,
        "group_size_fallback": "adjust",
    }
    for part in ["openvino_model.xml", *config.segments]:
        constants = [op for op in ov.Core().read_model(out / part).get_ops() if op.get_type_name() == "Constant"]
        assert any(op.get_element_type() == ov.Type.i4 for op in constants), part  # symmetric INT4
        assert any(op.get_element_type() == ov.Type.u8 for op in constants), part  # INT8 asymmetric backup
    model = OVModelForSequenceClassification.from_pretrained(out, ov_config=F32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert np.isfinite(model(**tokenizer(["good film"], return_tensors="np")).logits).all()


def run_command(capsys, *args) -> tuple[int, str]:
    """Runs `optimum-cli export dynexec ARGS` in this process: exit code and stderr."""
    from argparse import ArgumentParser

    from optimum_dynexec.commands.export_dynexec import DynexecExportCommand, parse_args_dynexec

    parser = ArgumentParser()
    parse_args_dynexec(parser)
    command = DynexecExportCommand.__new__(DynexecExportCommand)
    command.args = parser.parse_args(list(map(str, args)))
    with pytest.raises(SystemExit) as stop:
        command.run()
    return stop.value.code, capsys.readouterr().err


def test_bad_quantization_values_are_clean_errors(tiny_bert, tiny_train_file, tmp_path, capsys):
    common = ["--model", tiny_bert, "--task", "text-classification", "--train-file", tiny_train_file]
    result = run_cli(*common, "--weight-format", "int4", "--ratio", 2, tmp_path / "out")  # through optimum-cli
    assert result.returncode == 2 and "--ratio 2.0" in result.stderr and "Traceback" not in result.stderr
    for flags, expected in [  # the same command object in this process (each optimum-cli start costs ~8 s)
        (["--weight-format", "int8", "--dataset", "wikitext2"], "--dataset"),
        (["--group-size", 64], "--weight-format or --quant-mode"),
        (["--quant-mode", "hybrid"], "--quant-mode 'hybrid'"),
        (["--weight-format", "int4", "--sensitivity-metric", "loss"], "--sensitivity-metric 'loss'"),
        (["--weight-format", "int4", "--draft-weight-format", "int8"], "--draft-weight-format"),
    ]:
        code, stderr = run_command(capsys, *common, *flags, tmp_path / "out")
        assert code == 2 and expected in stderr and "Traceback" not in stderr, (flags, stderr[-2000:])
    assert not (tmp_path / "out").exists()
