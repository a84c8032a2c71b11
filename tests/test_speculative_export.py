"""`optimum-cli export dynexec --task text-generation-with-past`: the draft attached, speculation by default."""

import subprocess
import sys
from pathlib import Path

import openvino as ov
import pytest
import torch
from tiny_models import make_tiny_bert, make_tiny_llama, make_word_tokenizer

from optimum_dynexec import OVModelForCausalLM
from optimum_dynexec.configuration import SpeculativeConfig, load_dynexec_config
from optimum_dynexec.exporters.speculative import export_speculative

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
    spec = greedy(model, ids)
    drafted = model.draft._past_length
    assert drafted > ids.shape[1], "generate() should have drafted with the attached draft"
    model.speculation_enabled = False
    assert torch.equal(greedy(model, ids), spec)
    assert model.draft._past_length == drafted, "with speculation off the draft must stay idle"


def test_batch_falls_back_to_plain_decoding(exported, caplog):
    model = OVModelForCausalLM.from_pretrained(exported, ov_config=EXACT)
    ids = torch.tensor([[5, 9, 33], [7, 8, 10]])
    with caplog.at_level("WARNING"):
        out = greedy(model, ids)
    assert "one sequence at a time" in caplog.text
    model.speculation_enabled = False
    assert torch.equal(out, greedy(model, ids))


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
    assert config.quantization == {"target": {"weight_format": "int8", "sym": False}, "draft": None}

    def int8_constants(path):
        return sum(
            op.get_type_name() == "Constant" and op.get_element_type() in (ov.Type.i8, ov.Type.u8)
            for op in ov.Core().read_model(path).get_ops()
        )

    assert int8_constants(tmp_path / "openvino_model.xml") > 0
    assert int8_constants(tmp_path / "draft" / "openvino_model.xml") == 0


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
