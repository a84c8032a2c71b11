"""The same app on Ray Serve (2 replicas on a local Ray started here) and the Ray Data recipe; one Ray instance for
the module, since Ray starts slowly."""

import asyncio
import socket

import httpx
import numpy as np
import pytest
import ray
from conftest import F32
from ray import serve
from tiny_models import random_texts
from transformers import AutoTokenizer

from optimum_dynexec import OVModelForSequenceClassification
from optimum_dynexec.serve import app as ray_app_builder
from optimum_dynexec.serve.ray_data import EarlyExitBatchPredictor

TEXTS = random_texts(24, seed=11)
THRESHOLD = 0.503  # spreads the tiny random model's exits over its layers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    yield
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def local(tiny_early_exit):
    model = OVModelForSequenceClassification.from_pretrained(tiny_early_exit, ov_config=F32, exit_threshold=THRESHOLD)
    tokenizer = AutoTokenizer.from_pretrained(tiny_early_exit)

    def classify(texts: list[str]) -> tuple[list[str], np.ndarray, list[int]]:
        out = model(**tokenizer(texts, padding=True, return_tensors="np"))
        logits = np.asarray(out.logits)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        best = probs.argmax(-1)
        labels = [model.config.id2label[int(i)] for i in best]
        return labels, probs[np.arange(len(texts)), best], [int(x) for x in out.exit_layers]

    return classify


@pytest.fixture(scope="module")
def served(ray_instance, tiny_early_exit):
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # what `serve run optimum_dynexec.serve:app folder=... num_replicas=2 ...` builds (arguments arrive as strings)
    application = ray_app_builder(
        {
            "folder": str(tiny_early_exit),
            "num_replicas": "2",
            "num_cpus": "0.5",
            "precision": "f32",
            "api_key": "k",
            "exit_threshold": str(THRESHOLD),
        }
    )
    serve.run(application, name="dynexec", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    yield url
    serve.delete("dynexec")


async def _many(url: str, path: str, bodies: list[dict], concurrency: int, method: str = "POST") -> list:
    results: list = [None] * len(bodies)
    queue = list(enumerate(bodies))

    async def client(http):
        while queue:
            i, body = queue.pop()
            response = await (http.post(path, json=body) if method == "POST" else http.get(path))
            results[i] = (response.status_code, response.json())

    async with httpx.AsyncClient(base_url=url, timeout=120, headers={"Authorization": "Bearer k"}) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    return results


def test_two_replicas_serve_predict_equal_to_in_process(served, local):
    results = asyncio.run(_many(served, "/predict", [{"inputs": t} for t in TEXTS], concurrency=8))
    assert [status for status, _ in results] == [200] * len(TEXTS)
    labels, scores, layers = zip(*(local([t]) for t in TEXTS))
    assert [body[0]["label"] for _, body in results] == [x[0] for x in labels]
    assert [body[0]["exit_layer"] for _, body in results] == [x[0] for x in layers]
    assert len({x[0] for x in layers}) > 1
    np.testing.assert_allclose([body[0]["score"] for _, body in results], [x[0] for x in scores], atol=1e-4)
    instances = asyncio.run(_many(served, "/health", [{}] * 40, concurrency=8, method="GET"))
    assert {body["instance"] for _, body in instances} and len({body["instance"] for _, body in instances}) == 2
    assert httpx.post(served + "/predict", json={"inputs": "good"}).status_code == 401  # the key holds on Ray too
    bad = httpx.post(served + "/predict", json={"inputs": []}, headers={"Authorization": "Bearer k"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "empty_input"


def test_ray_data_map_batches_equals_in_process(ray_instance, tiny_early_exit, local):
    dataset = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(TEXTS)])
    rows = dataset.map_batches(
        EarlyExitBatchPredictor,
        fn_constructor_kwargs={"folder": str(tiny_early_exit), "ov_config": F32, "exit_threshold": THRESHOLD},
        batch_size=8,
        concurrency=1,
        num_cpus=0.5,
    ).take_all()
    rows = sorted(rows, key=lambda r: r["id"])
    assert [r["text"] for r in rows] == TEXTS
    labels, scores, layers = zip(*(local([t]) for t in TEXTS))
    assert [r["label"] for r in rows] == [x[0] for x in labels]
    assert [int(r["exit_layer"]) for r in rows] == [x[0] for x in layers]
    np.testing.assert_allclose([r["score"] for r in rows], [x[0] for x in scores], atol=1e-4)
