"""EAGLE draft heads: the target's hidden-state output, the stateful draft export, the lossless loop, export/CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import torch
from tiny_models import make_tiny_llama, plain_greedy, random_head, random_prompts, random_texts
from transformers import AutoConfig, LlamaForCausalLM

from optimum_dynexec import OVModelForCausalLM
from optimum_dynexec.configuration import SpeculativeConfig, load_dynexec_config
from optimum_dynexec.eagle import OVEagleDraft
from optimum_dynexec.exporters.eagle import export_eagle_draft
from optimum_dynexec.exporters.speculative import export_speculative
from optimum_dynexec.speculative_loop import StatefulRunner, speculative_greedy
from optimum_dynexec.target_graph import HIDDEN_OUTPUT, LOGITS_TO_KEEP, prepare_lean_model
from optimum_dynexec.training.eagle import WEIGHTS_FILE, EagleConfig, train_eagle
from optimum_dynexec.training.eagle_model import EagleDraftModel

EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
CLI = [str(Path(sys.executable).parent / "optimum-cli"), "export", "dynexec", "--task", "text-generation-with-past"]


def save_run(head: EagleDraftModel, folder: Path, hf: Path) -> Path:
    """A folder laid out like a `train_eagle` run."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"weights": head.state_dict(), "token_ids": head.token_ids, "target": str(hf)}, folder / WEIGHTS_FILE)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("eagle")
    ov_dir = make_tiny_llama(root / "target", num_layers=3, seed=0)
    hf = root / "target" / "hf"
    head = random_head(hf, vocab_step=2)
    export_eagle_draft(head, root / "head", quantization_config=None)
    return {"root": root, "ov": ov_dir, "hf": hf, "head": head, "head_dir": root / "head"}


@pytest.fixture(scope="module")
def target(tiny):
    return OVModelForCausalLM.from_pretrained(tiny["ov"], ov_config=EXACT)


def prompts():
    return random_prompts(1)


def test_hidden_output_is_the_lm_head_input(tiny, target):
    ids = np.asarray([[5, 9, 14, 3, 7]])
    before = plain_greedy(target, ids, 8)
    prepare_lean_model(target, hidden_states=True)
    prepare_lean_model(target, hidden_states=True)  # idempotent
    assert [o.get_any_name() for o in target.model.outputs].count(HIDDEN_OUTPUT) == 1
    runner = StatefulRunner(target)
    runner.reset()
    out = runner.infer(ids[0])
    reference = LlamaForCausalLM.from_pretrained(tiny["hf"]).eval()
    with torch.no_grad():
        ref = reference(torch.from_numpy(ids), output_hidden_states=True)
    np.testing.assert_allclose(out[HIDDEN_OUTPUT], ref.hidden_states[-1].numpy(), atol=1e-4)
    np.testing.assert_allclose(out["logits"], ref.logits.numpy(), atol=1e-3)
    assert LOGITS_TO_KEEP in runner.names
    runner.reset()
    last = runner.infer(ids[0], keep=2)  # the LM head runs on the last two positions only
    assert last["logits"].shape == (1, 2, 96) and last[HIDDEN_OUTPUT].shape == (1, 5, 32)
    np.testing.assert_allclose(last["logits"], ref.logits.numpy()[:, -2:], atol=1e-3)
    np.testing.assert_array_equal(plain_greedy(target, ids, 8), before)  # plain decoding is unchanged


def test_exported_head_matches_torch_with_its_cache(tiny):
    head, draft = tiny["head"], OVEagleDraft.from_pretrained(tiny["head_dir"], ov_config=EXACT)
    assert draft.eagle_config.draft_vocab_size == len(head.token_ids) == 48
    np.testing.assert_array_equal(draft.token_ids, head.token_ids.numpy())
    ids, hidden = torch.randint(0, 96, (1, 6)), torch.randn(1, 6, 32)
    with torch.no_grad():
        logits, features, _, _ = head(
            ids, hidden, torch.ones(1, 6, dtype=torch.long), torch.arange(6)[None], *head.empty_cache()
        )
    runner = StatefulRunner(draft)
    runner.reset()
    first = runner.infer(ids[0, :4].numpy(), hidden_states=hidden[:, :4].numpy())
    np.testing.assert_allclose(first["logits"][0], logits[0, :4].numpy(), atol=1e-4)
    second = runner.infer(ids[0, 4:].numpy(), hidden_states=hidden[:, 4:].numpy())  # reads its states
    np.testing.assert_allclose(second["logits"][0], logits[0, 4:].numpy(), atol=1e-4)
    np.testing.assert_allclose(second["features"][0], features[0, 4:].numpy(), atol=1e-4)
    # a rolled-back position is masked out: feeding the last token again gives the same output
    runner.trim(5)
    again = runner.infer(ids[0, 5:].numpy(), hidden_states=hidden[:, 5:].numpy())
    np.testing.assert_allclose(again["logits"][0], logits[0, 5:].numpy(), atol=1e-4)


@pytest.mark.parametrize("schedule", ["constant", "heuristic"])
@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("confidence", [0.0, 0.3])
def test_eagle_loop_is_lossless(tiny, target, schedule, k, confidence):
    from optimum_dynexec.policies.lookahead import LookaheadSchedule

    draft = OVEagleDraft.from_pretrained(tiny["head_dir"], ov_config=EXACT)
    for ids in prompts():
        expected = plain_greedy(target, ids, 24)
        got, stats = speculative_greedy(
            target, ids, 24, draft=draft, schedule=LookaheadSchedule(k, schedule), confidence_threshold=confidence
        )
        np.testing.assert_array_equal(got, expected)
        assert stats.target_calls <= 24 and stats.accepted <= stats.proposed


def test_generate_with_an_eagle_assistant(tiny, target, caplog):
    draft = OVEagleDraft.from_pretrained(tiny["head_dir"], ov_config=EXACT)
    ids = torch.from_numpy(prompts()[1])
    expected = plain_greedy(target, ids.numpy(), 16)
    out = target.generate(
        input_ids=ids,
        assistant_model=draft,
        max_new_tokens=16,
        do_sample=False,
        eos_token_id=None,
        assistant_confidence_threshold=0.0,  # a random head is never confident
    )
    np.testing.assert_array_equal(out.numpy(), expected)
    assert target.last_speculative_stats.proposed > 0
    torch.manual_seed(0)
    sampled = target.generate(
        input_ids=ids, assistant_model=draft, max_new_tokens=6, do_sample=True, eos_token_id=None
    )
    assert sampled.shape == (1, ids.shape[1] + 6)
    assert target.last_speculative_stats is not None, "an EAGLE head samples on the lean loop"
    target.use_lean_loop = False
    try:
        target.generate(input_ids=ids, assistant_model=draft, max_new_tokens=6, do_sample=True)
    finally:
        target.use_lean_loop = True
    assert "decodes plainly" in caplog.text


def test_head_for_another_vocabulary_is_refused(tiny, target, tmp_path):
    other = make_tiny_llama(tmp_path / "other", vocab_size=80, num_layers=1, seed=3)
    export_eagle_draft(random_head(other.parent / "hf"), tmp_path / "head80")
    with pytest.raises(ValueError, match="vocabulary of 80"):
        target.generate(
            input_ids=torch.tensor([[4, 5]]),
            assistant_model=OVEagleDraft.from_pretrained(tmp_path / "head80"),
            max_new_tokens=4,
        )
    with pytest.raises(ValueError, match="another model"):
        export_speculative(
            tiny["hf"],
            tmp_path / "out",
            draft_model=save_run(random_head(other.parent / "hf"), tmp_path / "run80", other.parent / "hf"),
        )
    with pytest.raises(FileNotFoundError, match="not an exported EAGLE draft"):
        OVEagleDraft.from_pretrained(tiny["ov"])


def test_export_round_trip_with_an_eagle_run(tiny, tmp_path):
    run = save_run(tiny["head"], tmp_path / "run", tiny["hf"])
    out = tmp_path / "exported"
    result = subprocess.run(
        [
            *CLI,
            "--model",
            tiny["hf"],
            "--draft-model",
            run,
            "--num-assistant-tokens",
            "3",
            "--draft-weight-format",
            "int8",
            "--assistant-confidence-threshold",
            "0",
            out,
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    config = load_dynexec_config(out)
    assert isinstance(config, SpeculativeConfig) and config.draft_type == "eagle" and config.num_assistant_tokens == 3
    assert config.quantization["draft"]["weight_format"] == "int8" and config.assistant_confidence_threshold == 0
    model = OVModelForCausalLM.from_pretrained(out, ov_config=EXACT)
    assert isinstance(model.draft, OVEagleDraft)
    ids = prompts()[2]
    expected = plain_greedy(OVModelForCausalLM.from_pretrained(tiny["ov"], ov_config=EXACT), ids, 20)
    t = torch.from_numpy(ids)
    np.testing.assert_array_equal(model.generate(input_ids=t, max_new_tokens=20, eos_token_id=None).numpy(), expected)
    assert model.last_speculative_stats.proposed > 0
    model.save_pretrained(tmp_path / "saved")
    again = OVModelForCausalLM.from_pretrained(tmp_path / "saved", ov_config=EXACT)
    assert isinstance(again.draft, OVEagleDraft)
    np.testing.assert_array_equal(again.draft.token_ids, model.draft.token_ids)
    # the head's precision never changes the output: it may run at the default precision under an f32 target
    fast_head = OVModelForCausalLM.from_pretrained(out, ov_config=EXACT, draft_ov_config={})
    assert fast_head.draft.ov_config == {}
    np.testing.assert_array_equal(
        fast_head.generate(input_ids=t, max_new_tokens=20, eos_token_id=None).numpy(), expected
    )
    # an exported head folder is accepted as --draft-model too, and the CLI picks EAGLE's lookahead defaults
    result = subprocess.run([*CLI, "--model", tiny["hf"], "--draft-model", tiny["head_dir"], tmp_path / "from_ir"])
    assert result.returncode == 0
    config = load_dynexec_config(tmp_path / "from_ir")
    assert config.draft_type == "eagle" and config.num_assistant_tokens == 3
    assert config.num_assistant_tokens_schedule == "constant" and config.assistant_confidence_threshold == 0.0


def test_config_validation():
    with pytest.raises(ValueError, match="draft_type"):
        SpeculativeConfig(draft_type="medusa")
    with pytest.raises(ValueError, match="unroll_steps"):
        EagleConfig(unroll_steps=3)
    with pytest.raises(ValueError, match="continuation_tokens"):
        EagleConfig(seq_len=16, continuation_tokens=16)
    with pytest.raises(ValueError, match="draft_vocab_size"):
        EagleConfig(draft_vocab_size=0)


def test_training_runs_resumes_and_exports(tiny, tmp_path):
    texts = {f"t{i}": " ".join(random_texts(600, seed=i, max_words=12)) for i in range(3)}
    config = dict(
        draft_vocab_size=40,
        seq_len=24,
        continuation_tokens=8,
        text_windows=6,
        continuation_windows=4,
        eval_windows=2,
        batch_size=2,
        save_every=1,
        max_minutes=None,
    )
    run = tmp_path / "run"
    train_eagle(run, tiny["hf"], tiny["ov"], EagleConfig(max_steps=2, **config), texts=texts)
    train_eagle(run, tiny["hf"], tiny["ov"], EagleConfig(max_steps=4, **config), texts=texts)
    metrics = json.loads((run / "eagle_metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["resumed_from_step"] == 2 and metrics["train_windows"] == 10
    assert metrics["draft_vocab_size"] == 40 and 0 <= metrics["after"]["accept_step1"] <= 1
    with pytest.raises(ValueError, match="other settings"):
        train_eagle(run, tiny["hf"], tiny["ov"], EagleConfig(max_steps=6, **{**config, "batch_size": 3}), texts=texts)
    out = tmp_path / "out"
    export_speculative(tiny["hf"], out, draft_model=run)
    head = OVEagleDraft.from_pretrained(out / "draft")
    assert head.eagle_config.metrics["steps"] == 4 and len(head.token_ids) == 40
    assert isinstance(ov.Core().read_model(out / "draft" / "openvino_model.xml"), ov.Model)
    assert AutoConfig.from_pretrained(out).vocab_size == 96


@pytest.mark.parametrize("lookup", [2, 5])
def test_eagle_with_prompt_lookup_is_lossless(tiny, target, lookup):
    """Prompt lookup proposes where the text repeats, the EAGLE head elsewhere; the text stays the target's."""
    from optimum_dynexec.policies.lookahead import LookaheadSchedule

    draft = OVEagleDraft.from_pretrained(tiny["head_dir"], ov_config=EXACT)
    repeating = np.asarray([[7, 8, 9, 10, 11, 7, 8, 9, 10, 11, 7, 8]])
    for ids in [*prompts(), repeating]:
        expected = plain_greedy(target, ids, 24)
        got, stats = speculative_greedy(
            target, ids, 24, draft=draft, prompt_lookup_num_tokens=lookup, schedule=LookaheadSchedule(3, "constant")
        )
        np.testing.assert_array_equal(got, expected)
    assert stats.proposed > 0


def test_config_with_draft_and_prompt_lookup():
    config = SpeculativeConfig(draft_type="eagle", prompt_lookup_num_tokens=4)
    assert config.generate_kwargs()["prompt_lookup_num_tokens"] == 4
    assert "prompt_lookup_num_tokens" not in SpeculativeConfig().generate_kwargs()


def test_a_fresh_head_over_a_gemma3_target_passes_its_features_through():
    """Gemma-3 scales its embeddings, keeps its RoPE per layer type and norms of another form: a fresh head still
    starts by passing the target's feature through, so its logits are the target's over the reduced vocabulary."""
    from tiny_models import FAMILY_CONFIGS
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=96, **FAMILY_CONFIGS["gemma3_text"])
    target = Gemma3ForCausalLM(config).eval()
    token_ids = torch.arange(0, 96, 3)
    head = EagleDraftModel.from_target(target, token_ids).eval()
    ids = torch.randint(3, 96, (1, 7))
    with torch.no_grad():
        out = target(ids, output_hidden_states=True)
        logits, _, _, _ = head(
            ids[:, 1:], out.hidden_states[-1][:, :-1], torch.ones(1, 6, dtype=torch.long), torch.arange(6)[None],
            *head.empty_cache(),
        )  # fmt: skip
        torch.testing.assert_close(logits, out.logits[:, :-1, token_ids], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(head.embed_tokens(ids), target.model.embed_tokens(ids))
