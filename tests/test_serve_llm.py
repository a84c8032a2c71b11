"""The embedded server over a speculative causal LM: OpenAI completions and chat (streamed or not) equal in-process
`generate()`, bad input gets its 4xx, the queue pushes back, and a disconnect frees the slot."""

import functools
import itertools
import json
import threading
import time

import httpx
import openai
import pytest
import torch
from tiny_models import make_char_tokenizer, make_tiny_llama, record_batch_feeds

from optimum_dynexec import OVModelForCausalLM
from optimum_dynexec.configuration import SpeculativeConfig
from optimum_dynexec.serve import build_fastapi_app
from optimum_dynexec.serve.background import BackgroundServer

EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
CONTEXT = 2048  # a long stream to disconnect from
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}.{% endfor %}"
    "{% if add_generation_prompt %}a:{% endif %}"
)
KEY = "test-key"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny causal LM that speculates by prompt lookup, with a character tokenizer (stop strings need text that
    tokens concatenate into) and a chat template."""
    root = tmp_path_factory.mktemp("serve_llm")
    out = make_tiny_llama(root / "target", num_layers=2, seed=0, max_position_embeddings=CONTEXT)
    SpeculativeConfig.for_drafter(None, prompt_lookup_num_tokens=3).save(out)
    tokenizer = make_char_tokenizer(96)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def local(folder):
    from transformers import AutoTokenizer

    return OVModelForCausalLM.from_pretrained(folder, ov_config=EXACT), AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def server(folder):
    app = build_fastapi_app(folder, ov_config=EXACT, api_key=KEY, max_queue=0, model_name="tiny")
    with BackgroundServer(app) as running:
        yield running


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
        yield http


def local_greedy(local, ids: list[int], max_tokens: int, speculative: bool = True, min_tokens: int = 0) -> list[int]:
    model, _ = local
    t = torch.tensor([ids])
    model.speculation_enabled = speculative
    try:
        out = model.generate(
            input_ids=t,
            attention_mask=torch.ones_like(t),
            max_new_tokens=max_tokens,
            do_sample=False,
            min_new_tokens=min_tokens or None,
        )
    finally:
        model.speculation_enabled = True
    return out[0, len(ids) :].tolist()


PROMPTS = ["abcabcab", "Hi there", "xyzzy xyzzy xy"]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_completion_equals_in_process_greedy_streamed_or_not(client, local, prompt):
    _, tokenizer = local
    ids = tokenizer(prompt)["input_ids"]
    expected = local_greedy(local, ids, 24)
    text = tokenizer.decode(expected, skip_special_tokens=True)
    out = client.completions.create(model="tiny", prompt=prompt, max_tokens=24, temperature=0)
    assert out.choices[0].text == text
    assert out.usage.prompt_tokens == len(ids) and out.usage.completion_tokens == len(expected)
    assert out.choices[0].finish_reason == ("length" if len(expected) == 24 else "stop")
    assert out.model_extra["dynexec"]["speculative"] is True
    chunks = list(
        client.completions.create(
            model="tiny",
            prompt=prompt,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == len(expected)


def test_speculation_off_per_request_gives_the_same_greedy_text(client, local):
    _, tokenizer = local
    ids = tokenizer(PROMPTS[0])["input_ids"]
    expected = tokenizer.decode(local_greedy(local, ids, 16, speculative=False), skip_special_tokens=True)
    out = client.completions.create(
        model="tiny", prompt=PROMPTS[0], max_tokens=16, temperature=0, extra_body={"speculative": False}
    )
    assert out.choices[0].text == expected and out.model_extra["dynexec"] == {"speculative": False}


def test_chat_completion_uses_the_chat_template(client, local):
    _, tokenizer = local
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "abcabc"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    expected = tokenizer.decode(local_greedy(local, ids, 20), skip_special_tokens=True)
    out = client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0)
    assert out.choices[0].message.content == expected and out.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected


def test_stop_strings_cut_the_text_and_seeded_sampling_repeats(client, local):
    _, tokenizer = local
    ids = tokenizer(PROMPTS[2])["input_ids"]
    full = tokenizer.decode(local_greedy(local, ids, 24, min_tokens=24), skip_special_tokens=True)
    assert len(full) > 6, full
    stop = full[4:6]
    cut = full[: full.index(stop)]
    out = client.completions.create(
        model="tiny", prompt=PROMPTS[2], max_tokens=24, temperature=0, stop=[stop, "@@"], extra_body={"min_tokens": 24}
    )
    assert out.choices[0].text == cut and out.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        model="tiny",
        prompt=PROMPTS[2],
        max_tokens=24,
        temperature=0,
        stop=[stop, "@@"],
        stream=True,
        extra_body={"min_tokens": 24},
    )
    assert "".join(c.choices[0].text for c in streamed) == cut
    runs = [
        client.completions.create(model="tiny", prompt=PROMPTS[1], max_tokens=16, temperature=0.9, top_p=0.9, seed=3)
        for _ in range(2)
    ]
    assert runs[0].choices[0].text == runs[1].choices[0].text


BAD_COMPLETIONS = [
    ({"prompt": "a", "max_tokens": CONTEXT}, "context_length_exceeded"),
    ({"prompt": "a", "max_tokens": 0}, "greater_than_equal"),
    ({"prompt": "a", "temperature": -1}, "greater_than_equal"),
    ({"prompt": "a", "temperature": 3}, "less_than_equal"),
    ({"prompt": "a", "top_p": 0}, "greater_than"),
    ({"prompt": "a", "frobnicate": True}, "extra_forbidden"),
    ({"prompt": ""}, "empty_prompt"),
    ({"prompt": ["a", "b"]}, "invalid_value"),
    ({"prompt": "a", "n": 2}, "less_than_equal"),
    ({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, "invalid_value"),
    ({"prompt": "a", "max_tokens": "many"}, "int_parsing"),
    ({"max_tokens": 4}, "missing"),
    ({"prompt": " ".join(["a"] * CONTEXT)}, "context_length_exceeded"),
]


def test_bad_input_gets_its_4xx_and_the_server_still_answers(http):
    for body, code in BAD_COMPLETIONS:
        response = http.post("/v1/completions", json=body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"], (body, error)
    bad_chat = [{"messages": []}, {"messages": [{"role": "wizard", "content": "a"}]}, {"messages": "a"}]
    for body in bad_chat:
        assert http.post("/v1/chat/completions", json=body).status_code == 400, body
    response = http.post("/v1/completions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    response = http.post("/v1/completions", content=b"x" * (2 << 20), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    chunked = (b"x" * 1024 for _ in range(2048))  # no Content-Length: the limit counts what arrives
    response = http.post("/v1/completions", content=chunked, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert http.post("/predict", json={"inputs": "a"}).status_code == 404  # a classifier's route, not this server's
    assert http.get("/v1/completions").status_code == 405
    out = http.post("/v1/completions", json={"prompt": "ab", "max_tokens": 4, "temperature": 0})
    assert out.status_code == 200 and out.json()["usage"]["completion_tokens"] >= 1


def test_api_key_is_required(server):
    assert httpx.get(server.url + "/health").status_code == 200  # the probe stays open
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = httpx.post(server.url + "/v1/completions", json={"prompt": "a"}, headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert httpx.get(server.url + "/metrics").status_code == 401


def metric(http, name: str) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_full_queue_pushes_back_and_a_disconnect_frees_the_slot(server, http, monkeypatch):
    """max_queue=0: one generation at a time. A long stream holds the slot, a second request gets 429 with
    Retry-After; closing the stream stops the generation far short of its length and frees the slot."""
    model = server.app.state.loaded.model
    forward = model.forward
    held, calls = threading.Event(), itertools.count()

    @functools.wraps(forward)
    def slow_forward(*args, **kwargs):  # at least 2 ms a token: the stream cannot end before the client leaves
        if next(calls) >= 3:  # after the first tokens, the slot stays taken until the busy request was answered
            held.wait(60)
        time.sleep(0.002)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", slow_forward)
    cancelled = metric(http, "dynexec_cancelled_generations_total")
    generated = metric(http, "dynexec_generated_tokens_total")
    n = CONTEXT - 8
    long = {"prompt": "ab", "max_tokens": n, "min_tokens": n, "temperature": 0, "stream": True, "speculative": False}
    with http.stream("POST", "/v1/completions", json=long) as stream:
        first = next(stream.iter_lines())
        assert first.startswith("data: ") and json.loads(first[6:])["choices"][0]["text"], first
        busy = http.post("/v1/completions", json={"prompt": "a", "max_tokens": 2})
        held.set()
        assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"
        assert busy.json()["error"]["type"] == "rate_limit_error"
    deadline = time.monotonic() + 60
    while http.get("/health").json()["queue"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http.get("/health").json()["queue"] == 0
    assert metric(http, "dynexec_cancelled_generations_total") == cancelled + 1
    assert metric(http, "dynexec_generated_tokens_total") - generated < n
    assert http.post("/v1/completions", json={"prompt": "a", "max_tokens": 2}).status_code == 200
    # a client that gives up on a non-streaming request frees the slot too
    with pytest.raises(httpx.TimeoutException):
        http.post("/v1/completions", json={**long, "stream": False}, timeout=0.5)
    deadline = time.monotonic() + 60
    while http.get("/health").json()["queue"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(http, "dynexec_cancelled_generations_total") == cancelled + 2


def test_metrics_count_requests_tokens_and_acceptance(http):
    http.post("/v1/completions", json={"prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0})
    text = http.get("/metrics").text
    for name in (
        'dynexec_requests_total{endpoint="/v1/completions",status="200"}',
        'dynexec_requests_total{endpoint="/v1/completions",status="400"}',
        "dynexec_generated_tokens_total",
        "dynexec_prompt_tokens_total",
        "dynexec_target_calls_total",
        "dynexec_accepted_draft_tokens_total",
        "dynexec_tokens_per_target_call_count",
        "dynexec_request_latency_seconds_bucket",
    ):
        assert name in text, name
    assert metric(http, "dynexec_tokens_per_target_call_count") >= 1
    assert metric(http, 'dynexec_requests_total{endpoint="/v1/completions",status="429"}') >= 1


# -- concurrent requests share generate() calls ------------------------------------------------------------------
@pytest.fixture(scope="module")
def batching_server(folder):
    """Room for 4 waiting requests, and a long batching window: 4 concurrent requests fill one batch."""
    app = build_fastapi_app(
        folder, ov_config=EXACT, max_queue=8, max_generation_batch=4, max_wait_ms=2000, batch_speculation=True
    )
    with BackgroundServer(app) as running:
        yield running


def concurrently(url: str, bodies: list[dict]) -> list[dict]:
    """Posts `bodies` to /v1/completions at once, one thread each; the JSON answers in order."""
    answers = [None] * len(bodies)

    def post(i: int) -> None:
        answers[i] = httpx.post(url + "/v1/completions", json=bodies[i], timeout=60).json()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def batch_sizes(url: str) -> tuple[float, float]:
    """The generation-batch histogram's count and sum."""
    lines = httpx.get(url + "/metrics").text.splitlines()
    value = {line.split(" ")[0]: float(line.split(" ")[1]) for line in lines if not line.startswith("#")}
    return value["dynexec_generation_batch_size_count"], value["dynexec_generation_batch_size_sum"]


@pytest.mark.parametrize("speculative", [True, False])
def test_concurrent_requests_share_one_call_and_each_gets_its_own_text(batching_server, local, speculative):
    """4 greedy requests, different prompts and lengths, one with a stop string: one batched call, and each row is
    what in-process generate() gives it alone (cut at its own max_tokens and stop string)."""
    model, tokenizer = local
    prompts, lengths = [*PROMPTS, "The quick brown fox"], [24, 10, 17, 30]
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    alone = [local_greedy(local, i, n, speculative) for i, n in zip(ids, lengths)]
    texts = [tokenizer.decode(t, skip_special_tokens=True) for t in alone]
    assert len(texts[0]) > 6, texts[0]
    stop = texts[0][4:6]  # row 0 stops early; the others must not be cut by its stop string
    t = torch.tensor([ids[0]])
    model.speculation_enabled = speculative
    try:
        stopped = model.generate(
            input_ids=t,
            attention_mask=torch.ones_like(t),
            max_new_tokens=24,
            do_sample=False,
            stop_strings=[stop],
            tokenizer=tokenizer,
        )[0, len(ids[0]) :].tolist()
    finally:
        model.speculation_enabled = True
    bodies = [
        {"prompt": p, "max_tokens": n, "temperature": 0, "speculative": speculative} for p, n in zip(prompts, lengths)
    ]
    bodies[0]["stop"] = [stop]
    calls = batching_server.app.state.service.batcher.batch_sizes
    before, count = len(calls), batch_sizes(batching_server.url)
    answers = concurrently(batching_server.url, bodies)
    assert calls[before:] == [4]
    assert batch_sizes(batching_server.url) == (count[0] + 1, count[1] + 4)
    first = answers[0]["choices"][0]
    assert first["text"] == texts[0][: texts[0].index(stop)] and first["finish_reason"] == "stop"
    assert answers[0]["usage"]["completion_tokens"] == len(stopped) < len(alone[0])
    for answer, text, tokens, n in list(zip(answers, texts, alone, lengths))[1:]:
        choice = answer["choices"][0]
        assert choice["text"] == text and answer["usage"]["completion_tokens"] == len(tokens)
        assert choice["finish_reason"] == ("length" if len(tokens) == n else "stop")
    for answer in answers:
        assert answer["dynexec"]["batch_size"] == 4 and answer["dynexec"]["speculative"] is speculative


def test_concurrent_streams_share_a_speculative_call_and_each_gets_its_own_text(batching_server, local):
    """3 streamed requests and one plain request arrive together: one speculative call of 4 rows, every stream's text
    (and stop) is what the request gets alone; a stream that asks for no speculation runs alone."""
    _, tokenizer = local
    prompts, lengths = [*PROMPTS, "The quick brown fox"], [24, 10, 17, 30]
    alone = [local_greedy(local, tokenizer(p)["input_ids"], n) for p, n in zip(prompts, lengths)]
    texts = [tokenizer.decode(t, skip_special_tokens=True) for t in alone]
    answers = [None] * 4

    def post(i: int) -> None:
        body = {"prompt": prompts[i], "max_tokens": lengths[i], "temperature": 0, "stream": i < 3}
        if i < 3:
            with httpx.stream("POST", batching_server.url + "/v1/completions", json=body, timeout=60) as response:
                lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
            assert lines[-1] == "[DONE]"
            chunks = [json.loads(line) for line in lines[:-1]]
            answers[i] = ("".join(c["choices"][0]["text"] for c in chunks), chunks[-1]["choices"][0]["finish_reason"])
        else:
            choice = httpx.post(batching_server.url + "/v1/completions", json=body, timeout=60).json()["choices"][0]
            answers[i] = (choice["text"], choice["finish_reason"])

    calls = batching_server.app.state.service.batcher.batch_sizes
    before = len(calls)
    threads = [threading.Thread(target=post, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls[before:] == [4]
    assert [a[0] for a in answers] == texts
    assert [a[1] for a in answers] == ["length" if len(t) == n else "stop" for t, n in zip(alone, lengths)]
    plain = {"prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0, "stream": True, "speculative": False}
    with httpx.stream("POST", batching_server.url + "/v1/completions", json=plain, timeout=60) as response:
        assert response.status_code == 200 and list(response.iter_lines())
    assert len(calls) == before + 1, "a stream without speculation never joins a batch"


def test_seeded_requests_are_never_batched(batching_server):
    calls = batching_server.app.state.service.batcher.batch_sizes
    before, count = len(calls), batch_sizes(batching_server.url)
    body = {"prompt": PROMPTS[1], "max_tokens": 12, "temperature": 0.9, "top_p": 0.9, "seed": 5}
    answers = concurrently(batching_server.url, [body] * 3)
    assert len(calls) == before and batch_sizes(batching_server.url) == (count[0] + 3, count[1] + 3)
    assert len({a["choices"][0]["text"] for a in answers}) == 1
    assert all("batch_size" not in a["dynexec"] for a in answers)


def test_max_generation_batch_1_runs_every_request_alone(folder, local):
    _, tokenizer = local
    app = build_fastapi_app(folder, ov_config=EXACT, max_queue=8, max_generation_batch=1)
    assert app.state.service.batcher is None
    prompts, lengths = [*PROMPTS, "The quick brown fox"], [24, 10, 17, 30]
    texts = [
        tokenizer.decode(local_greedy(local, tokenizer(p)["input_ids"], n), skip_special_tokens=True)
        for p, n in zip(prompts, lengths)
    ]
    with BackgroundServer(app) as running:
        answers = concurrently(
            running.url, [{"prompt": p, "max_tokens": n, "temperature": 0} for p, n in zip(prompts, lengths)]
        )
        assert batch_sizes(running.url) == (4, 4)
    assert [a["choices"][0]["text"] for a in answers] == texts
    assert all("batch_size" not in a["dynexec"] for a in answers)


def test_shared_calls_decode_plainly_without_batch_speculation(folder, local):
    """Without batch speculation a call shared by several requests decodes plainly (a stream then runs alone); a lone
    request still speculates; batch speculation is the server's default, `--no-batch-speculation` turns it off."""
    from optimum_dynexec.serve.cli import parser, settings_from_args
    from optimum_dynexec.serve.generation import BatchKey, GenerationJob, TokenBridge, run_generation_batch

    model, tokenizer = local
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    jobs = [GenerationJob(i, max_new_tokens=12, temperature=0, speculative=True) for i in ids]
    key = BatchKey.of(jobs[0], model, batch_speculation=False)
    assert key == BatchKey.of(GenerationJob(ids[0], 12, temperature=0, speculative=False), model, False)
    assert not key.speculative and BatchKey.of(jobs[0], model, batch_speculation=True).speculative
    results = run_generation_batch(model, tokenizer, jobs, key)
    assert all(r.target_calls is None and r.batch_size == 3 for r in results), "the shared call did not speculate"
    assert [r.new_tokens for r in results] == [local_greedy(local, i, 12) for i in ids]
    alone = run_generation_batch(model, tokenizer, jobs[:1], key)[0]
    assert alone.target_calls is not None, "a request alone speculates"
    stream = GenerationJob(ids[0], 12, temperature=0, streamer=TokenBridge(None))
    assert BatchKey.of(stream, model, batch_speculation=False) is None
    assert BatchKey.of(stream, model, batch_speculation=True) is not None
    # a folder whose drafter does not speculate on batches (a draft model's default) shares calls plainly
    assert model.speculates_on_batches
    model.speculate_batches = False
    try:
        assert not BatchKey.of(jobs[0], model, batch_speculation=True).speculative
        assert BatchKey.of(stream, model, batch_speculation=True) is None
    finally:
        model.speculate_batches = None
    assert settings_from_args(parser().parse_args(["f"])).batch_speculation
    assert not settings_from_args(parser().parse_args(["f", "--no-batch-speculation"])).batch_speculation


def test_max_generation_batch_is_validated():
    from optimum_dynexec.serve.cli import parser, settings_from_args
    from optimum_dynexec.serve.server import ServeSettings

    with pytest.raises(ValueError, match="max_generation_batch must be positive, got 0"):
        ServeSettings(max_generation_batch=0)
    assert settings_from_args(parser().parse_args(["f", "--max-generation-batch", "1"])).max_generation_batch == 1


def test_a_batch_leaves_out_a_job_cancelled_before_it_starts(local):
    from optimum_dynexec.serve.generation import BatchKey, GenerationJob, run_generation_batch

    model, tokenizer = local
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    jobs = [GenerationJob(i, max_new_tokens=12, temperature=0) for i in ids]
    jobs[1].cancel.set()
    results = run_generation_batch(model, tokenizer, jobs, BatchKey.of(jobs[0], model))
    assert results[1].new_tokens == [] and results[0].batch_size == 2
    assert [r.new_tokens for r in (results[0], results[2])] == [local_greedy(local, ids[k], 12) for k in (0, 2)]


def test_a_client_that_leaves_a_running_batch_loses_only_its_row(batching_server, local, monkeypatch):
    """4 rows in one call; the longest row's client gives up while the call runs: the others get their own text,
    the call runs on for them, and the leaver counts as cancelled."""
    _, tokenizer = local
    model = batching_server.app.state.loaded.model
    forward = model.forward

    @functools.wraps(forward)
    def slow_forward(*args, **kwargs):  # 300 tokens take well over the leaver's 0.5 s
        time.sleep(0.005)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", slow_forward)
    long_ids = tokenizer(PROMPTS[0])["input_ids"]
    assert len(local_greedy(local, long_ids, 300, speculative=False)) == 300  # no EOS: the call runs 300 tokens
    prompts = [PROMPTS[1], PROMPTS[2], "The quick brown fox"]
    texts = [
        tokenizer.decode(local_greedy(local, tokenizer(p)["input_ids"], 8, False), skip_special_tokens=True)
        for p in prompts
    ]
    url = batching_server.url
    probe = httpx.Client(base_url=url)
    cancelled = metric(probe, "dynexec_cancelled_generations_total")
    calls = batching_server.app.state.service.batcher.batch_sizes
    before = len(calls)

    def leave() -> None:
        with pytest.raises(httpx.TimeoutException):
            body = {"prompt": PROMPTS[0], "max_tokens": 300, "temperature": 0, "speculative": False}
            httpx.post(url + "/v1/completions", json=body, timeout=0.5)

    leaver = threading.Thread(target=leave)
    leaver.start()
    bodies = [{"prompt": p, "max_tokens": 8, "temperature": 0, "speculative": False} for p in prompts]
    answers = concurrently(url, bodies)
    leaver.join()
    assert calls[before:] == [4]
    assert [a["choices"][0]["text"] for a in answers] == texts
    deadline = time.monotonic() + 30
    while probe.get("/health").json()["queue"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(probe, "dynexec_cancelled_generations_total") == cancelled + 1
    probe.close()


def test_a_speculative_batch_stops_verifying_a_row_at_its_own_length(local, monkeypatch):
    """Rows of one speculative call with different max_tokens: each gets what it gets alone, and a row that reached
    its own length is fed to no later verification call (it does not compute up to the longest row's length)."""
    from optimum_dynexec.serve.generation import BatchKey, GenerationJob, run_generation_batch

    model, tokenizer = local
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    lengths = [3, 30, 8]
    jobs = [GenerationJob(i, max_new_tokens=n, temperature=0, speculative=True) for i, n in zip(ids, lengths)]
    fed = record_batch_feeds(monkeypatch)
    results = run_generation_batch(model, tokenizer, jobs, BatchKey.of(jobs[0], model))
    assert [r.new_tokens for r in results] == [local_greedy(local, i, n) for i, n in zip(ids, lengths)]
    assert len(fed) > 3 and results[0].batch_size == 3
    assert sum(0 in rows for rows in fed[1:]) <= 2, "row 0 leaves the calls after its 3 tokens"
