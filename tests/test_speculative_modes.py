"""Speculative decoding on every call shape: sampling with processors, streamers, stop conditions, clear fallbacks."""

import numpy as np
import pytest
import torch
from conftest import F32
from optimum.intel import OVModelForCausalLM as PlainOVModel
from tiny_models import make_char_tokenizer, make_tiny_llama, random_head, record_batch_feeds
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteria,
    TemperatureLogitsWarper,
    TextIteratorStreamer,
    TopPLogitsWarper,
)
from transformers.generation.streamers import BaseStreamer

from optimum_dynexec import OVModelForCausalLM, RowStreamers, modeling_decoder
from optimum_dynexec.eagle import OVEagleDraft
from optimum_dynexec.exporters.eagle import export_eagle_draft
from optimum_dynexec.sampling import draw

EXACT = {**F32, "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
SAMPLING = {"do_sample": True, "temperature": 0.4, "top_p": 0.8, "repetition_penalty": 2.0}


def test_draw_follows_the_weights_and_never_picks_a_zero():
    weights = torch.tensor([0.0, 0.2, 0.0, 0.5, 0.3, 0.0])
    torch.manual_seed(0)
    counts = np.bincount([draw(weights) for _ in range(20000)], minlength=6) / 20000
    assert counts[[0, 2, 5]].sum() == 0
    np.testing.assert_allclose(counts, weights.numpy(), atol=0.015)  # ~4 standard deviations
    torch.manual_seed(3)
    first = [draw(weights * 7.0) for _ in range(50)]  # unnormalized weights; seeded draws repeat
    torch.manual_seed(3)
    assert first == [draw(weights) for _ in range(50)]


def drafter_kwargs(draft, head) -> dict[str, dict]:
    constant = {"num_assistant_tokens": 3, "num_assistant_tokens_schedule": "constant"}
    return {
        "prompt lookup": {"prompt_lookup_num_tokens": 3},
        "draft model": {"assistant_model": draft, **constant},  # stops below 0.4 (the default confidence)
        "EAGLE head": {"assistant_model": head, **constant, "assistant_confidence_threshold": 0.0},
        "EAGLE head + lookup": {"assistant_model": head, **constant, "prompt_lookup_num_tokens": 2},
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A target with an 8-token vocabulary (laws can be computed exactly), a draft and an EAGLE head for it."""
    root = tmp_path_factory.mktemp("modes")
    target_dir = make_tiny_llama(root / "target", vocab_size=8, num_layers=2, seed=3)
    draft_dir = make_tiny_llama(root / "draft", vocab_size=8, num_layers=1, seed=4)
    export_eagle_draft(random_head(root / "target" / "hf", seed=1), root / "head", quantization_config=None)
    target = OVModelForCausalLM.from_pretrained(target_dir, ov_config=EXACT)
    draft = OVModelForCausalLM.from_pretrained(draft_dir, ov_config=EXACT)
    head = OVEagleDraft.from_pretrained(root / "head", ov_config=EXACT)
    return target, PlainOVModel.from_pretrained(target_dir, ov_config=EXACT), drafter_kwargs(draft, head)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A 96-token target with a word tokenizer (stop strings, streamers), a draft and an EAGLE head."""
    root = tmp_path_factory.mktemp("modes_wide")
    target_dir = make_tiny_llama(root / "target", num_layers=2, seed=0)
    draft_dir = make_tiny_llama(root / "draft", num_layers=1, seed=1)
    export_eagle_draft(random_head(root / "target" / "hf", seed=2), root / "head", quantization_config=None)
    target = OVModelForCausalLM.from_pretrained(target_dir, ov_config=EXACT)
    draft = OVModelForCausalLM.from_pretrained(draft_dir, ov_config=EXACT)
    head = OVEagleDraft.from_pretrained(root / "head", ov_config=EXACT)
    plain = PlainOVModel.from_pretrained(target_dir, ov_config=EXACT)
    tokenizer = make_char_tokenizer(96)
    return target, plain, drafter_kwargs(draft, head), tokenizer


def second_token_law(plain, prompt: list[int], processors: LogitsProcessorList | None) -> np.ndarray:
    """The exact law of the second new token when every step samples from the processed logits."""

    def law(tokens):
        logits = torch.from_numpy(np.asarray(plain(input_ids=torch.tensor([tokens])).logits[0, -1:], np.float32))
        if processors is not None:
            logits = processors(torch.tensor([tokens]), logits)
        return torch.softmax(logits[0].double(), -1).numpy()

    first = law(prompt)
    return sum(first[t] * law([*prompt, t]) for t in range(len(first)) if first[t] > 0)


@pytest.mark.parametrize(
    "drafter, sample_drafts",
    [
        ("prompt lookup", False),
        ("draft model", False),
        ("draft model", True),
        ("EAGLE head", False),
        ("EAGLE head", True),
    ],
)
def test_speculative_sampling_keeps_the_processed_distribution(small, drafter, sample_drafts, monkeypatch):
    """Temperature, top_p and repetition penalty shape the target and (when it draws) the drafter alike: the sampled
    tokens follow the target's processed law (a processor applied to one side only moves the law far beyond the
    tolerance), whether model drafters propose their argmax (the default) or draw from their processed law."""
    target, plain, drafters = small
    monkeypatch.setattr(target, "sample_drafts", sample_drafts)
    prompt = [3, 5, 4, 3, 5, 4, 3]
    processors = LogitsProcessorList(
        [RepetitionPenaltyLogitsProcessor(2.0), TemperatureLogitsWarper(0.4), TopPLogitsWarper(0.8)]
    )
    expected, unprocessed = second_token_law(plain, prompt, processors), second_token_law(plain, prompt, None)
    assert 0.5 * np.abs(expected - unprocessed).sum() > 0.2, "the test needs processors that change the law"
    n, counts, proposed = 500, np.zeros(8), 0
    ids = torch.tensor([prompt])
    for seed in range(n):
        torch.manual_seed(seed)
        out = target.generate(input_ids=ids, max_new_tokens=2, eos_token_id=None, **SAMPLING, **drafters[drafter])
        counts[int(out[0, -1])] += 1
        proposed += target.last_speculative_stats.proposed
    assert proposed > n / 10, "the drafter should propose in many calls"
    # total variation between the empirical law and the exact one; sampling noise is about 0.04
    assert 0.5 * np.abs(counts / n - expected).sum() < 0.09


@pytest.mark.parametrize("drafter", ["prompt lookup", "draft model", "EAGLE head + lookup"])
def test_seeded_sampling_is_reproducible(wide, drafter):
    target, _, drafters, _ = wide
    ids = torch.tensor([[5, 9, 14, 5, 9, 14, 5, 9]])
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(target.generate(input_ids=ids, max_new_tokens=24, **SAMPLING, **drafters[drafter]))
        assert target.last_speculative_stats is not None
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("drafter", ["prompt lookup", "draft model", "EAGLE head", "EAGLE head + lookup"])
def test_greedy_with_processors_equals_plain(wide, drafter):
    target, plain, drafters, _ = wide
    ids = torch.tensor([[5, 9, 14, 5, 9, 14, 5, 9]])
    settings = {"max_new_tokens": 24, "do_sample": False, "repetition_penalty": 1.2, "no_repeat_ngram_size": 4}
    assert torch.equal(
        target.generate(input_ids=ids, **settings, **drafters[drafter]), plain.generate(input_ids=ids, **settings)
    )
    assert target.last_speculative_stats is not None


class Collect(BaseStreamer):
    def __init__(self):
        self.puts, self.ended = [], False

    def put(self, value):
        self.puts.append(value.reshape(-1).tolist())

    def end(self):
        self.ended = True


@pytest.mark.parametrize("drafter", ["prompt lookup", "draft model", "EAGLE head"])
@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampling"])
def test_streamer_receives_what_is_returned(wide, drafter, sample):
    target, _, drafters, tokenizer = wide
    ids = torch.tensor([[5, 9, 14, 5, 9, 14, 5, 9]])
    streamer = Collect()
    torch.manual_seed(0)
    out = target.generate(input_ids=ids, max_new_tokens=20, do_sample=sample, streamer=streamer, **drafters[drafter])
    assert target.last_speculative_stats is not None
    assert streamer.puts[0] == ids[0].tolist(), "the prompt comes first, as in plain decoding"
    assert sum(streamer.puts[1:], []) == out[0, ids.shape[1] :].tolist() and streamer.ended
    # transformers' own streamer gets the same text
    text_streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
    torch.manual_seed(0)
    again = target.generate(
        input_ids=ids, max_new_tokens=20, do_sample=sample, streamer=text_streamer, **drafters[drafter]
    )
    assert "".join(text_streamer) == tokenizer.decode(again[0, ids.shape[1] :])


def test_stop_conditions_cut_where_plain_decoding_cuts(wide):
    target, plain, drafters, tokenizer = wide
    ids = torch.tensor([[5, 9, 14, 5, 9, 14, 5, 9]])
    greedy = {"max_new_tokens": 30, "do_sample": False}
    full = plain.generate(input_ids=ids, **greedy, eos_token_id=None)[0, ids.shape[1] :].tolist()
    stop_word = tokenizer.decode(full[5:7])
    eos_pair = [full[4], full[9]]

    class AfterFive(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= ids.shape[1] + 5, dtype=torch.bool)

    cases = {
        "stop string": {"stop_strings": [stop_word], "tokenizer": tokenizer, "eos_token_id": None},
        "several EOS ids": {"eos_token_id": eos_pair},
        "min_new_tokens": {"eos_token_id": eos_pair, "min_new_tokens": 8},
        "custom criterion": {"stopping_criteria": [AfterFive()], "eos_token_id": None},
    }
    for name, stop in cases.items():
        expected = plain.generate(input_ids=ids, **greedy, **stop)
        if name == "min_new_tokens":  # the EOS ids are suppressed for 8 tokens (the first comes 5th otherwise)
            assert expected.shape[1] >= ids.shape[1] + 8, name
        else:
            assert expected.shape[1] < ids.shape[1] + 30, f"{name}: the case should stop early"
        for kwargs in drafters.values():
            got = target.generate(input_ids=ids, **greedy, **stop, **kwargs)
            assert torch.equal(got, expected), name
            assert target.last_speculative_stats is not None, name
    timed = target.generate(input_ids=ids, **greedy, max_time=0.0, prompt_lookup_num_tokens=3)
    assert timed.shape[1] == ids.shape[1] + 1  # the time is up after the first token, as in plain decoding


def test_settings_the_loop_cannot_serve_are_named_and_decode_plainly(wide, caplog):
    target, plain, drafters, _ = wide
    ids = torch.tensor([[5, 9, 14, 5, 9, 14, 5, 9]])
    modeling_decoder._warn_once.cache_clear()
    for setting in ({"num_beams": 2}, {"return_dict_in_generate": True, "output_scores": True}):
        with caplog.at_level("WARNING"):
            out = target.generate(input_ids=ids, max_new_tokens=8, prompt_lookup_num_tokens=3, **setting)
        reference = plain.generate(input_ids=ids, max_new_tokens=8, **setting)
        sequences = getattr(out, "sequences", out)
        assert torch.equal(sequences, getattr(reference, "sequences", reference))
        assert target.last_speculative_stats is None
        assert f"{next(iter(setting))}=" in caplog.text and "decode plainly" in caplog.text
    caplog.clear()
    target.generate(input_ids=ids, max_new_tokens=8, prompt_lookup_num_tokens=3, num_beams=2)
    assert "num_beams" not in caplog.text, "each setting is named once"


def left_padded_batch(rows: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


BATCH = [[5, 9, 14, 5, 9, 14, 5, 9], [30, 31, 32], [7, 8, 7, 8, 7, 8, 7, 8, 7, 8, 7], [50, 60, 70, 80, 50, 60]]


@pytest.mark.parametrize("drafter", ["prompt lookup", "draft model", "EAGLE head", "EAGLE head + lookup"])
def test_batch_greedy_equals_optimum_intel_plain_batch(wide, drafter):
    """Every row speculates in shared verification calls; rows finish at their own EOS and are padded after it."""
    target, plain, drafters, _ = wide
    ids, mask = left_padded_batch(BATCH)
    free = plain.generate(input_ids=ids, attention_mask=mask, max_new_tokens=20, do_sample=False, eos_token_id=None)
    eos = int(free[1, ids.shape[1] + 4])  # row 1 stops after 5 new tokens (others may stop at it too)
    settings = {"max_new_tokens": 20, "do_sample": False, "eos_token_id": eos, "pad_token_id": 0}
    expected = plain.generate(input_ids=ids, attention_mask=mask, **settings)
    assert (expected[1, ids.shape[1] + 5 :] == 0).all() and expected.shape[1] > ids.shape[1] + 5
    kwargs = {**drafters[drafter], "assistant_confidence_threshold": 0.0}
    if "assistant_model" not in kwargs:
        kwargs.pop("assistant_confidence_threshold")
    got = target.generate(input_ids=ids, attention_mask=mask, **settings, **kwargs)
    assert torch.equal(got, expected)
    stats = target.last_speculative_stats
    assert stats is not None and stats.proposed > 0
    assert stats.target_calls <= 20, "one verification call serves every row"
    # one padded sequence alone takes the same path
    one = target.generate(input_ids=ids[1:2], attention_mask=mask[1:2], **settings, **kwargs)
    assert torch.equal(one, plain.generate(input_ids=ids[1:2], attention_mask=mask[1:2], **settings))


class RowLengths(StoppingCriteria):
    """A criterion with a limit per row: row `i` stops after `limits[i]` new tokens."""

    def __init__(self, width: int, limits: list[int]):
        self.width, self.limits = width, torch.tensor(limits)

    def __call__(self, input_ids, scores, **kwargs):
        return input_ids.shape[1] - self.width >= self.limits[: input_ids.shape[0]]


def test_batch_rows_stop_at_their_own_limits_and_leave_the_calls(wide, monkeypatch):
    """A criterion that stops each row at its own length: the rows equal plain batch decoding with it (padded after
    their stop), and a stopped row is fed to no later verification call."""

    target, plain, drafters, _ = wide
    ids, mask = left_padded_batch(BATCH)
    limits = [3, 20, 9, 14]
    free = plain.generate(input_ids=ids, attention_mask=mask, max_new_tokens=20, do_sample=False, eos_token_id=None)
    # plain batch decoding pads a stopped row only when an EOS is set: one that never comes
    eos = min(set(range(target.config.vocab_size)) - set(free.flatten().tolist()))
    settings = {"max_new_tokens": 20, "do_sample": False, "eos_token_id": eos, "pad_token_id": 0}
    expected = plain.generate(
        input_ids=ids, attention_mask=mask, stopping_criteria=[RowLengths(ids.shape[1], limits)], **settings
    )
    fed = record_batch_feeds(monkeypatch)
    got = target.generate(
        input_ids=ids,
        attention_mask=mask,
        stopping_criteria=[RowLengths(ids.shape[1], limits)],
        prompt_lookup_num_tokens=3,
        **settings,
    )
    assert torch.equal(got, expected)
    for row, limit in enumerate(limits):
        assert (got[row, ids.shape[1] + limit :] == 0).all()
        assert sum(row in rows for rows in fed[1:]) <= limit - 1, "a stopped row leaves the verification calls"


def test_batch_streams_each_row_to_its_own_streamer_and_ends_it_at_its_stop(wide, caplog):
    """`RowStreamers` on a speculative batch: row i's streamer gets its prompt, then exactly its new tokens (none of
    the padding after its EOS), and ends with its row; a plain streamer on a batch is named and decodes plainly."""
    target, plain, drafters, _ = wide
    ids, mask = left_padded_batch(BATCH)
    free = plain.generate(input_ids=ids, attention_mask=mask, max_new_tokens=20, do_sample=False, eos_token_id=None)
    eos = int(free[1, ids.shape[1] + 4])  # row 1 stops after 5 new tokens
    settings = {"max_new_tokens": 20, "do_sample": False, "eos_token_id": eos, "pad_token_id": 0}
    rows = [Collect() for _ in BATCH]
    ended_at = []
    for i, row in enumerate(rows):  # record the order in which rows end
        row.end = lambda i=i, row=row: (ended_at.append(i), setattr(row, "ended", True))
    out = target.generate(
        input_ids=ids, attention_mask=mask, streamer=RowStreamers(rows), **settings, **drafters["prompt lookup"]
    )
    assert target.last_speculative_stats is not None
    assert torch.equal(out, plain.generate(input_ids=ids, attention_mask=mask, **settings))
    for i, row in enumerate(rows):
        assert row.puts[0] == ids[i].tolist() and row.ended
        new = out[i, ids.shape[1] :].tolist()
        stop = new.index(eos) + 1 if eos in new else len(new)
        assert sum(row.puts[1:], []) == new[:stop]
    assert ended_at[0] == 1, "the row that stops first ends first"
    modeling_decoder._warn_once.cache_clear()
    single = Collect()
    with caplog.at_level("WARNING"):
        target.generate(input_ids=ids, attention_mask=mask, streamer=single, **settings, **drafters["prompt lookup"])
    assert "a streamer on a batch" in caplog.text and target.last_speculative_stats is None
    with pytest.raises(ValueError, match="holds 2 streamers, got a batch of 4 rows"):
        target.generate(
            input_ids=ids,
            attention_mask=mask,
            streamer=RowStreamers(rows[:2]),
            **settings,
            **drafters["prompt lookup"],
        )


def test_batch_sampling_is_reproducible_and_keeps_rows_apart(wide):
    target, plain, drafters, _ = wide
    ids, mask = left_padded_batch(BATCH)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(
            target.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=16, **SAMPLING, **drafters["draft model"]
            )
        )
    assert torch.equal(runs[0], runs[1]) and target.last_speculative_stats is not None
    assert torch.equal(runs[0][:, : ids.shape[1]], ids)
