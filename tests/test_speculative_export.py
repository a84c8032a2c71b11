"""`optimum-cli export dynexec --task text-generation-with-past`: the draft attached, speculation by default."""

import json
import subprocess
import sys
from argparse import ArgumentParser
from pathlib import Path

import openvino as ov
import pytest
import torch
from tiny_models import make_tiny_bert, make_tiny_llama, make_word_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from optimum_dynexec import OVModelForCausalLM
from optimum_dynexec.commands.export_dynexec import DynexecExportCommand, parse_args_dynexec
from optimum_dynexec.configuration import CONFIG_NAME, DRAFTER_DEFAULTS, SpeculativeConfig, load_dynexec_config
from optimum_dynexec.exporters import speculative as speculative_exporter
from optimum_dynexec.exporters.eagle import export_eagle_draft
from optimum_dynexec.exporters.quantization import quantization_config_from_flags
from optimum_dynexec.exporters.speculative import export_speculative
from optimum_dynexec.training.eagle import WEIGHTS_FILE
from optimum_dynexec.training.eagle_model import EagleDraftModel

EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
CLI = [str(Path(sys.executable).parent / "optimum-cli"), "export", "dynexec", "--task", "text-generation-with-past"]


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec")
    make_tiny_llama(root / "target", num_layers=3, seed=0)
    make_tiny_llama(root / "draft", num_layers=1, seed=1)
    make_tiny_llama(root / "alien", num_layers=1, seed=2)
    make_word_tokenizer(96, shuffle_seed=0).save_pretrained(root / "alien" / "hf")
    make_tiny_bert(root / "bert")
    return {name: root / name / "hf" for name in ("target", "draft", "alien")} | {"bert": root / "bert"}


@pytest.fixture(scope="module")
def exported(hf, tmp_path_factory):
    out = tmp_path_factory.mktemp("spec_out")
    result = subprocess.run(
        [
            *CLI,
            "--model",
            hf["target"],
            "--draft-model",
            hf["draft"],
            "--num-assistant-tokens",
            "4",
            "--assistant-schedule",
            "constant",
            out,
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def greedy(model, ids, **kwargs):
    return model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=20,
        min_new_tokens=20,
        do_sample=False,
        **kwargs,
    )


def test_folder_layout_and_config(exported):
    config = load_dynexec_config(exported)
    assert config == SpeculativeConfig(
        draft="draft",
        num_assistant_tokens=4,
        num_assistant_tokens_schedule="constant",
        quantization={"target": None, "draft": None},
    )
    assert (exported / "openvino_model.xml").is_file() and (exported / "draft" / "openvino_model.xml").is_file()


def test_speculates_by_default_and_stays_lossless(exported):
    model = OVModelForCausalLM.from_pretrained(exported, ov_config=EXACT)
    assert model.draft is not None and model.speculation_enabled
    ids = torch.tensor([[5, 9, 33, 41, 7]])
    spec = greedy(model, ids, assistant_confidence_threshold=0.0)  # a random draft is never confident
    assert model.last_speculative_stats.proposed > 0, "generate() should have drafted with the attached draft"
    model.speculation_enabled = False
    assert torch.equal(greedy(model, ids), spec)
    assert model.last_speculative_stats is None, "with speculation off the draft must stay idle"


def test_a_batch_decodes_plainly_unless_asked(exported, caplog):
    from optimum_dynexec import modeling_decoder

    modeling_decoder._warn_once.cache_clear()
    model = OVModelForCausalLM.from_pretrained(exported, ov_config=EXACT)
    ids = torch.tensor([[5, 9, 33], [7, 8, 10]])
    with caplog.at_level("WARNING"):
        plain = greedy(model, ids)
    assert model.last_speculative_stats is None and "speculate_batches" in caplog.text
    assert not model.speculates_on_batches, "a draft model drafts row by row: batches decode plainly by default"
    model.speculate_batches = True
    out = greedy(model, ids, assistant_confidence_threshold=0.0)
    assert model.last_speculative_stats is not None and model.last_speculative_stats.proposed > 0
    assert torch.equal(out, plain)


def test_a_folder_that_looks_up_prompts_speculates_on_batches_by_default(tmp_path):
    folder = make_tiny_llama(tmp_path / "lookup", num_layers=2, seed=0)
    SpeculativeConfig.for_drafter(None, prompt_lookup_num_tokens=3).save(folder)
    model = OVModelForCausalLM.from_pretrained(folder, ov_config=EXACT)
    ids = torch.tensor([[5, 9, 33, 5, 9, 33, 5], [7, 8, 10, 7, 8, 10, 7]])
    out = greedy(model, ids)
    assert model.speculates_on_batches
    assert model.last_speculative_stats is not None and model.last_speculative_stats.proposed > 0
    model.speculate_batches = False
    assert torch.equal(out, greedy(model, ids)) and model.last_speculative_stats is None


def test_save_pretrained_keeps_the_draft(exported, tmp_path):
    model = OVModelForCausalLM.from_pretrained(exported, ov_config=EXACT)
    model.save_pretrained(tmp_path)
    again = OVModelForCausalLM.from_pretrained(tmp_path, ov_config=EXACT)
    assert again.draft is not None and again.speculative_config == model.speculative_config


def test_prompt_lookup_folder(hf, tmp_path):
    config = export_speculative(hf["target"], tmp_path)
    assert config.draft is None and config.prompt_lookup_num_tokens == 5
    model = OVModelForCausalLM.from_pretrained(tmp_path, ov_config=EXACT)
    ids = torch.tensor([[5, 9, 33, 41, 5, 9, 33, 41, 5, 9]])
    spec = greedy(model, ids)
    model.speculation_enabled = False
    assert torch.equal(spec, greedy(model, ids))


def test_independent_weight_formats(hf, tmp_path):
    from optimum.intel import OVWeightQuantizationConfig

    config = export_speculative(
        hf["target"], tmp_path, hf["draft"], quantization_config=OVWeightQuantizationConfig(bits=8)
    )
    assert config.quantization == {"target": {"weight_format": "int8"}, "draft": None}

    def int8_constants(path):
        return sum(
            op.get_type_name() == "Constant" and op.get_element_type() in (ov.Type.i8, ov.Type.u8)
            for op in ov.Core().read_model(path).get_ops()
        )

    assert int8_constants(tmp_path / "openvino_model.xml") > 0
    assert int8_constants(tmp_path / "draft" / "openvino_model.xml") == 0


@pytest.fixture(scope="module")
def eagle_head(hf, tmp_path_factory):
    """An exported (random) EAGLE head for the tiny target."""
    target = LlamaForCausalLM.from_pretrained(hf["target"]).eval()
    head = EagleDraftModel.from_target(target, torch.arange(target.config.vocab_size)).eval()
    return export_eagle_draft(head, tmp_path_factory.mktemp("eagle") / "head")


@pytest.mark.parametrize("drafter", ["prompt lookup", "draft model", "eagle head"])
def test_cli_and_api_write_the_same_config(hf, eagle_head, tmp_path, drafter, monkeypatch):
    """The drafters' defaults live in one place: the CLI without lookahead flags and `export_speculative(config=None)`
    write the same `dynexec_config.json`. The model exports are left out here (recorded, not run): the round trips
    through optimum-cli with each drafter are the tests above and `test_eagle.py`'s."""
    exported = []

    def record(*args, **kwargs):
        exported.append(Path(args[1]))
        Path(args[1]).mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(speculative_exporter, "export_causal_lm", record)
    monkeypatch.setattr(speculative_exporter, "export_eagle_for", record)
    draft = {"prompt lookup": None, "draft model": hf["draft"], "eagle head": eagle_head}[drafter]
    parser = ArgumentParser()
    parse_args_dynexec(parser)
    command = DynexecExportCommand.__new__(DynexecExportCommand)  # what optimum-cli builds, in this process
    flags = [] if draft is None else ["--draft-model", draft]
    command.args = parser.parse_args(
        list(map(str, ["--task", "text-generation-with-past", "--model", hf["target"], *flags, tmp_path / "cli"]))
    )
    command.run()
    export_speculative(hf["target"], tmp_path / "api", draft)
    cli, api = (json.loads((tmp_path / name / CONFIG_NAME).read_text()) for name in ("cli", "api"))
    assert cli == api
    assert len(exported) == 2 * (1 if draft is None else 2)  # target (and draft) exported by both
    config = SpeculativeConfig.from_dict(cli)
    if draft is None:
        assert config.draft is None and config.prompt_lookup_num_tokens == 5
    else:
        defaults = DRAFTER_DEFAULTS["eagle" if drafter == "eagle head" else "model"]
        assert (config.num_assistant_tokens, config.assistant_confidence_threshold) == (
            defaults.num_assistant_tokens,
            defaults.assistant_confidence_threshold,
        )


def test_lookahead_flags_need_a_draft(hf, tmp_path):
    result = subprocess.run(
        [*CLI, "--model", hf["target"], "--num-assistant-tokens", "3", tmp_path / "out"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "num_assistant_tokens" in result.stderr and "Traceback" not in result.stderr


def make_wide_llama(folder: Path) -> Path:
    """A tiny Llama 96 wide: its attention and MLP inputs are not a multiple of an INT4 group of 64."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=96,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    make_word_tokenizer(96).save_pretrained(folder)
    return folder


def test_int4_group_size_fallback(tmp_path):
    """INT4 on layers whose width the group does not divide: optimum-intel's `group_size_fallback`, as a flag."""
    wide = make_wide_llama(tmp_path / "wide")
    with pytest.raises(ValueError, match="--group-size-fallback adjust"):
        export_speculative(
            wide,
            tmp_path / "fails",
            quantization_config=quantization_config_from_flags(weight_format="int4", group_size=64),
        )
    out = tmp_path / "int4"
    flags = ["--weight-format", "int4", "--group-size", "64", "--group-size-fallback", "adjust", "--sym"]
    result = subprocess.run([*CLI, "--model", wide, *flags, out], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    config = load_dynexec_config(out)
    assert config.quantization["target"] == {
        "weight_format": "int4",
        "group_size": 64,
        "sym": True,
        "group_size_fallback": "adjust",
    }
    constants = [
        op for op in ov.Core().read_model(out / "openvino_model.xml").get_ops() if op.get_type_name() == "Constant"
    ]
    assert any(op.get_element_type() == ov.Type.i4 for op in constants)
    model = OVModelForCausalLM.from_pretrained(out, ov_config=EXACT)
    ids = torch.tensor([[5, 9, 33, 41, 5, 9, 33]])
    spec = greedy(model, ids)
    model.speculation_enabled = False
    assert torch.equal(spec, greedy(model, ids))


def test_quant_mode_calibrates_on_a_dataset_file(hf, tmp_path):
    """`--quant-mode int8` on a causal LM: optimum-intel quantizes it, calibrating on `--dataset` (here a .txt)."""
    texts = tmp_path / "calibration.txt"
    texts.write_text("\n".join(" ".join(f"w{3 + (i * 7 + j) % 90}" for j in range(12)) for i in range(8)) + "\n")
    with pytest.raises(ValueError, match="--dataset"):
        export_speculative(
            hf["target"], tmp_path / "no_data", quantization_config=quantization_config_from_flags("int8")
        )
    out = tmp_path / "int8"
    flags = ["--quant-mode", "int8", "--dataset", texts, "--num-samples", "4"]
    result = subprocess.run([*CLI, "--model", hf["target"], *flags, out], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_dynexec_config(out).quantization == {"target": {"quant_mode": "int8"}, "draft": None}
    ir = ov.Core().read_model(out / "openvino_model.xml")
    assert any(op.get_type_name() == "FakeQuantize" for op in ir.get_ops())
    model = OVModelForCausalLM.from_pretrained(out, ov_config=EXACT)
    ids = torch.tensor([[5, 9, 33, 41, 5, 9, 33]])
    spec = greedy(model, ids)
    model.speculation_enabled = False
    assert torch.equal(spec, greedy(model, ids))


def test_eagle_head_takes_data_free_compression(hf, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / WEIGHTS_FILE).write_bytes(b"")  # looks like an EAGLE training run: rejected before it is read
    with pytest.raises(ValueError, match="EAGLE draft head is compressed without calibration data"):
        export_speculative(
            hf["target"],
            tmp_path / "out",
            run,
            draft_quantization_config=quantization_config_from_flags(weight_format="int4", scale_estimation=True),
        )


def test_mismatched_tokenizer(hf, tmp_path):
    with pytest.raises(ValueError, match="must share the target's tokenizer"):
        export_speculative(hf["target"], tmp_path, hf["alien"])
    result = subprocess.run(
        [*CLI, "--model", hf["target"], "--draft-model", hf["alien"], tmp_path / "cli"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "tokenizer" in result.stderr and "Traceback" not in result.stderr


def test_draft_that_is_not_a_causal_lm(hf, tmp_path):
    with pytest.raises(ValueError, match="not a causal LM"):
        export_speculative(hf["target"], tmp_path, hf["bert"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_assistant_tokens": 0}, "positive"),
        ({"num_assistant_tokens_schedule": "wild"}, "schedule"),
        ({"assistant_confidence_threshold": 1.0}, r"\[0, 1\)"),
        ({"draft": None}, "draft model or prompt_lookup"),
        ({"prompt_lookup_num_tokens": 0}, "positive"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpeculativeConfig(**kwargs)
