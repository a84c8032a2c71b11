"""Mechanics of the draft-model distillation on a tiny random Llama (the real run uses SmolLM2 and Jane Austen)."""

import json
from pathlib import Path

import pytest
import torch
from tiny_models import make_tokenizer, random_texts
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from optimum_dynexec.training.draft import (
    METRICS_FILE,
    DraftConfig,
    build_student,
    load_target,
    mean_kl,
    split_token_chunks,
    train_draft,
)

TEXTS = {f"book{i}": " ".join(random_texts(300, seed=i)) for i in range(2)}


@pytest.fixture(scope="module")
def tiny_target(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_llama_target")
    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        initializer_range=0.2,
        tie_word_embeddings=True,
        pad_token_id=0,
    )
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_config(**kwargs) -> DraftConfig:
    defaults = dict(
        num_layers=1,
        seq_len=16,
        batch_size=4,
        max_steps=4,
        max_minutes=None,
        learning_rate=3e-3,
        warmup_steps=0,
        top_k=8,
        teacher_dtype="float32",
        student_autocast=False,
        eval_tokens=0,
        save_every=2,
        continuation_prompts=8,
        continuation_tokens=8,
        eval_continuations=2,
    )
    defaults.update(kwargs)
    return DraftConfig(**defaults)


@pytest.mark.parametrize(
    "bad",
    [
        {"num_layers": 0},
        {"seq_len": 1},
        {"batch_size": -2},
        {"max_steps": 0},
        {"max_minutes": 0.0},
        {"learning_rate": -1e-3},
        {"top_k": 0},
        {"temperature": 0.0},
        {"eval_fraction": 1.0},
        {"teacher_dtype": "float8"},
        {"num_layers": 2.5},
        {"continuation_share": 1.0},
        {"continuation_prompts": -1},
        {"continuation_tokens": 128},
        {"continuation_tokens": 0},
    ],
)
def test_bad_config_raises(bad):
    with pytest.raises(ValueError):
        DraftConfig(**bad)


def test_student_deeper_than_target_raises(tiny_target, tmp_path):
    with pytest.raises(ValueError, match="layers"):
        train_draft(tmp_path / "out", tiny_config(num_layers=5), target_dir=tiny_target, texts=TEXTS)


def test_student_keeps_vocab_tokenizer_and_shares_embeddings(tiny_target, tmp_path):
    target = load_target(tiny_target)
    student = build_student(target, 2)
    assert student.config.vocab_size == target.config.vocab_size
    assert student.config.num_hidden_layers == 2
    assert torch.equal(student.model.embed_tokens.weight, target.model.embed_tokens.weight)
    assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()  # tied
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, target.model.layers[1].mlp.up_proj.weight)

    out = train_draft(tmp_path / "draft", tiny_config(num_layers=2, max_steps=2), target_dir=tiny_target, texts=TEXTS)
    saved = AutoModelForCausalLM.from_pretrained(out)
    assert saved.config.vocab_size == target.config.vocab_size
    assert saved.config.num_hidden_layers == 2
    assert torch.equal(saved.model.embed_tokens.weight, target.model.embed_tokens.weight)  # frozen
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(tiny_target).get_vocab()
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert metrics["steps"] == 2 and metrics["vocab_size"] == target.config.vocab_size
    assert 0.0 <= metrics["acceptance_before"] <= 1.0 and 0.0 <= metrics["acceptance_after"] <= 1.0
    assert metrics["parameters"] == sum(p.numel() for p in saved.parameters())


def test_training_lowers_kl(tiny_target, tmp_path):
    config = tiny_config(max_steps=40)
    target = load_target(tiny_target)
    train_chunks, _ = split_token_chunks(TEXTS, AutoTokenizer.from_pretrained(tiny_target), 16, config.eval_fraction)
    before = mean_kl(build_student(target, 1), target, train_chunks, config)
    out = train_draft(tmp_path / "draft", config, target_dir=tiny_target, texts=TEXTS)
    after = mean_kl(AutoModelForCausalLM.from_pretrained(out), target, train_chunks, config)
    assert after < 0.8 * before, (before, after)


def test_resume_continues_from_checkpoint(tiny_target, tmp_path, monkeypatch):
    from optimum_dynexec.training import draft

    config = tiny_config(max_steps=6, save_every=2)
    straight = train_draft(tmp_path / "straight", config, target_dir=tiny_target, texts=TEXTS)

    # A run killed during its 4th step leaves the checkpoint of step 2 behind.
    real_loss, calls = draft.distillation_loss, []

    def dying_loss(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(draft, "distillation_loss", dying_loss)
    with pytest.raises(KeyboardInterrupt):
        train_draft(resumed, config, target_dir=tiny_target, texts=TEXTS)
    monkeypatch.setattr(draft, "distillation_loss", real_loss)
    assert (resumed / draft.CHECKPOINT_DIR / draft.CHECKPOINT_FILE).is_file()
    assert not (resumed / METRICS_FILE).exists()

    train_draft(resumed, config, target_dir=tiny_target, texts=TEXTS)
    metrics = json.loads((resumed / METRICS_FILE).read_text())
    assert metrics["resumed_from_step"] == 2 and metrics["steps"] == 6
    straight_metrics = json.loads((straight / METRICS_FILE).read_text())
    assert metrics["acceptance_before"] == straight_metrics["acceptance_before"]
    a = AutoModelForCausalLM.from_pretrained(straight).state_dict()
    b = AutoModelForCausalLM.from_pretrained(resumed).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    with pytest.raises(ValueError, match="checkpoint"):
        train_draft(resumed, tiny_config(max_steps=8, seq_len=12), target_dir=tiny_target, texts=TEXTS)


def test_load_austen_books_missing_package_names_it(tmp_path, monkeypatch):
    from optimum_dynexec.reference.austen import APT_PACKAGE, load_austen_books

    monkeypatch.setenv("OPTIMUM_DYNEXEC_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match=APT_PACKAGE):
        load_austen_books(data_dir=tmp_path / "nowhere")


def test_load_austen_books(tmp_path, monkeypatch):
    from optimum_dynexec.reference.austen import DEFAULT_DATA_DIR, load_austen_books

    if not (DEFAULT_DATA_DIR / "Rdata.rdx").is_file():
        pytest.skip("Debian package r-cran-janeaustenr is not installed")
    pytest.importorskip("rdata")
    monkeypatch.setenv("OPTIMUM_DYNEXEC_CACHE", str(tmp_path / "cache"))
    books = load_austen_books()
    assert len(books) == 6
    assert "It is a truth universally acknowledged" in books["Pride & Prejudice"]
    assert sum(len(t) for t in books.values()) > 3_500_000
    assert len(list((tmp_path / "cache" / "data" / "austen").glob("*.txt"))) == 6
    assert load_austen_books() == books  # from the cache


def test_austen_token_splits_leave_out_the_benchmark_passage():
    from optimum_dynexec.reference.austen import BENCHMARK_GAP, austen_token_splits

    tokenizer = make_tokenizer()
    filler = " ".join(["good movie"] * 20_000)  # 200,000 characters
    middle = len(filler) // 2
    # "terrible" only in the benchmark's gap, "awful" only in the held-out tail
    long = filler[:middle] + " terrible " + filler[middle:] + " awful" * 100
    short = "great film " * 40  # too short to hold the gap: kept whole
    train, held = austen_token_splits(tokenizer, 0.01, {"long": long, "short": short})
    terrible, awful, great = (tokenizer.convert_tokens_to_ids(w) for w in ("terrible", "awful", "great"))
    assert all(terrible not in ids for ids in train + held)
    assert awful not in train[0] and awful in held[0]
    assert great in train[1]
    n_long = len(tokenizer(" ".join(long.split()), add_special_tokens=False)["input_ids"])
    removed = n_long - len(train[0]) - len(held[0])
    assert 0.9 * sum(BENCHMARK_GAP) / len("good ") < removed < 1.1 * sum(BENCHMARK_GAP) / len("good ")


def test_continuations_are_the_targets_greedy_text_and_are_cached(tiny_target, tmp_path, monkeypatch):
    from optimum_dynexec.training import draft

    config = tiny_config(max_steps=2, continuation_prompts=6, continuation_tokens=10, eval_continuations=3)
    out = train_draft(tmp_path / "draft", config, target_dir=tiny_target, texts=TEXTS)
    saved = torch.load(out / draft.CONTINUATIONS_FILE, weights_only=False)
    assert saved["train"].shape == (6, 16) and saved["eval"].shape == (3, 16)
    target = load_target(tiny_target)
    for rows in (saved["train"], saved["eval"]):
        greedy = target(rows).logits.argmax(-1)
        assert torch.equal(greedy[:, 5:-1], rows[:, 6:])  # each new token is the target's argmax
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert metrics["continuation_chunks"] == 6 and metrics["eval_continuation_tokens"] == 3 * 16
    assert 0.0 <= metrics["continuation_acceptance_after"] <= 1.0

    def no_generation(*args, **kwargs):
        raise AssertionError("the cached continuations should be reused")

    monkeypatch.setattr(draft, "target_continuations", no_generation)
    (out / draft.CHECKPOINT_DIR / draft.CHECKPOINT_FILE).unlink()
    train_draft(out, config, target_dir=tiny_target, texts=TEXTS)
    with pytest.raises(AssertionError, match="cached"):  # other settings: made again
        train_draft(tmp_path / "other", tiny_config(continuation_prompts=5), target_dir=tiny_target, texts=TEXTS)


def test_batches_mix_book_text_and_continuations():
    from optimum_dynexec.training.draft import _training_batch

    config = tiny_config(batch_size=8, continuation_share=0.25)
    text, generated = torch.zeros(40, 16, dtype=torch.long), torch.ones(12, 16, dtype=torch.long)
    for step in range(10):
        batch = _training_batch(step, text, generated, config)
        assert batch.shape == (8, 16) and int(batch[:, 0].sum()) == 2
    assert int(_training_batch(0, text, None, config)[:, 0].sum()) == 0
    assert tiny_config(continuation_share=0.0).continuation_chunks_per_batch == 0
