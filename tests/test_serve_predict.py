"""The embedded server over an early-exit classifier: `/predict` equals the in-process class, concurrent requests
are batched and none is lost, bad input gets its 4xx, `/metrics` has the exit-layer histogram; a plain optimum-intel
folder is served too."""

import asyncio
import shutil

import httpx
import numpy as np
import pytest
from conftest import F32
from optimum.intel import OVModelForSequenceClassification as PlainOVModel
from tiny_models import random_texts
from transformers import AutoTokenizer

from optimum_dynexec import OVModelForSequenceClassification
from optimum_dynexec.configuration import CONFIG_NAME
from optimum_dynexec.serve import build_fastapi_app
from optimum_dynexec.serve.background import BackgroundServer
from optimum_dynexec.serve.loadgen import run_load
from optimum_dynexec.serve.loading import model_kind

MAX_BATCH = 16
THRESHOLD = 0.503  # the tiny random heads are barely confident: this threshold spreads the exits over the layers


@pytest.fixture(scope="module")
def server(tiny_early_exit):
    app = build_fastapi_app(
        tiny_early_exit, ov_config=F32, exit_threshold=THRESHOLD, max_batch_size=MAX_BATCH, max_wait_ms=5, max_queue=64
    )
    with BackgroundServer(app) as running:
        yield running


@pytest.fixture(scope="module")
def local(tiny_early_exit):
    model = OVModelForSequenceClassification.from_pretrained(tiny_early_exit, ov_config=F32, exit_threshold=THRESHOLD)
    return model, AutoTokenizer.from_pretrained(tiny_early_exit)


def in_process(local, texts: list[str], exits: bool = True) -> tuple[np.ndarray, np.ndarray]:
    model, tokenizer = local
    model.exits_enabled = exits
    try:
        out = model(**tokenizer(texts, padding=True, return_tensors="np"))
    finally:
        model.exits_enabled = True
    logits = np.asarray(out.logits)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return probs / probs.sum(-1, keepdims=True), np.asarray(out.exit_layers)


def as_arrays(predictions: list[list[dict]], labels: dict) -> tuple[np.ndarray, np.ndarray]:
    """`/predict` answers (per input: labels sorted by score) as a `(n, num_labels)` score array and exit layers."""
    index = {name: i for i, name in labels.items()}
    scores = np.zeros((len(predictions), len(labels)))
    for row, prediction in enumerate(predictions):
        for entry in prediction:
            scores[row, index[entry["label"]]] = entry["score"]
    return scores, np.asarray([p[0]["exit_layer"] for p in predictions])


TEXTS = random_texts(12, seed=5)


@pytest.mark.parametrize("exits", [True, False])
def test_predict_equals_the_in_process_class(server, local, exits):
    model, _ = local
    body = {"inputs": TEXTS} if exits else {"inputs": TEXTS, "early_exit": False}
    response = httpx.post(server.url + "/predict", json=body)
    assert response.status_code == 200, response.text
    scores, layers = as_arrays(response.json(), model.config.id2label)
    expected_scores, expected_layers = in_process(local, TEXTS, exits)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    assert layers.tolist() == expected_layers.tolist()
    assert len(set(layers.tolist())) > 1 if exits else set(layers.tolist()) == {model.config.num_hidden_layers}
    single = httpx.post(server.url + "/predict", json={"inputs": TEXTS[0], "raw_scores": True}).json()
    assert isinstance(single[0], dict) and single[0]["score"] >= single[-1]["score"]  # TEI: one text, one list


async def _concurrent(url: str, texts: list[str], concurrency: int) -> list:
    results: list = [None] * len(texts)
    queue = list(enumerate(texts))

    async def client(http):
        while queue:
            i, text = queue.pop()
            response = await http.post("/predict", json={"inputs": text})
            results[i] = (response.status_code, response.json())

    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    return results


def test_load_of_200_requests_at_concurrency_16_loses_nothing_and_batches(server, local):
    model, _ = local
    service = server.app.state.service
    calls_before, inputs_before = len(service.batcher.batch_sizes), sum(service.batcher.batch_sizes)
    texts = random_texts(200, seed=9)
    results = asyncio.run(_concurrent(server.url, texts, concurrency=16))
    assert [status for status, _ in results] == [200] * 200
    scores, layers = as_arrays([body for _, body in results], model.config.id2label)
    expected = [in_process(local, [t]) for t in texts]
    np.testing.assert_allclose(scores, np.concatenate([s for s, _ in expected]), atol=1e-4)
    assert layers.tolist() == [int(x[0]) for _, x in expected] and len(set(layers.tolist())) > 1
    sizes = service.batcher.batch_sizes[calls_before:]
    assert sum(sizes) == 200 and sum(service.batcher.batch_sizes) == inputs_before + 200
    assert max(sizes) > 1 and len(sizes) < 200  # concurrent requests shared calls


def test_load_generator_reports_every_request(server):
    result = asyncio.run(run_load(server.url, "/predict", [{"inputs": t} for t in TEXTS], concurrency=4, requests=40))
    assert result.ok == 40 and result.statuses == {200: 40} and result.requests_per_s > 0
    assert result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]


BAD = [
    ({"inputs": []}, 400, "empty_input"),
    ({"inputs": ""}, 400, "empty_input"),
    ({"inputs": ["good", "  "]}, 400, "empty_input"),
    ({"inputs": ["good"] * (MAX_BATCH + 1)}, 413, "batch_too_large"),
    ({"inputs": " ".join(["good"] * 200)}, 413, "context_length_exceeded"),
    ({"inputs": "good", "top_k": 3}, 400, "extra_forbidden"),
    ({"inputs": 7}, 400, None),
    ({}, 400, "missing"),
]


def test_bad_input_gets_its_4xx_and_the_server_still_answers(server):
    for body, status, code in BAD:
        response = httpx.post(server.url + "/predict", json=body)
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert error["message"] and (code is None or error["code"] == code), (body, error)
    truncated = httpx.post(server.url + "/predict", json={"inputs": " ".join(["good"] * 200), "truncate": True})
    assert truncated.status_code == 200
    assert httpx.post(server.url + "/v1/completions", json={"prompt": "hi"}).status_code == 404
    assert httpx.post(server.url + "/predict", json={"inputs": "a good day"}).status_code == 200


def test_metrics_have_the_exit_layer_histogram(server):
    httpx.post(server.url + "/predict", json={"inputs": TEXTS})
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "dynexec_exit_layer_bucket",
        "dynexec_classified_inputs_total",
        "dynexec_batch_size_bucket",
        'dynexec_requests_total{endpoint="/predict",status="200"}',
        'dynexec_requests_total{endpoint="/predict",status="413"}',
    ):
        assert name in text, name
    health = httpx.get(server.url + "/health").json()
    assert health["kind"] == "classifier" and health["dynamic"] is True and health["endpoints"] == ["/predict"]


def test_a_plain_optimum_intel_folder_is_served(tiny_early_exit, tmp_path):
    folder = tmp_path / "plain"  # the dynexec folder without its exits is optimum-intel's export
    folder.mkdir()
    for path in tiny_early_exit.iterdir():
        if path.is_file() and path.name != CONFIG_NAME:
            shutil.copy(path, folder / path.name)
    assert model_kind(folder) == "classifier"
    plain = PlainOVModel.from_pretrained(folder, ov_config=F32)
    with BackgroundServer(build_fastapi_app(folder, ov_config=F32)) as running:
        response = httpx.post(running.url + "/predict", json={"inputs": TEXTS[:4]})
        assert httpx.get(running.url + "/health").json()["dynamic"] is False
    scores, layers = as_arrays(response.json(), plain.config.id2label)
    logits = plain(**AutoTokenizer.from_pretrained(folder)(TEXTS[:4], padding=True, return_tensors="np")).logits
    logits = np.asarray(logits)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(scores, probs / probs.sum(-1, keepdims=True), atol=1e-5)
    assert layers.tolist() == [plain.config.num_hidden_layers] * 4
