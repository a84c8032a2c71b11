"""The embedded server over a StepSaver pipeline: `/v1/images/generations` returns decodable PNGs with the steps
each image ran, equal to the in-process pipeline; bad input gets its 4xx."""

import base64
import io
import json

import httpx
import numpy as np
import openai
import pytest
import torch
from conftest import F32
from PIL import Image
from tiny_models import make_tiny_sd

from optimum_dynexec import OVStableDiffusionPipeline
from optimum_dynexec.exporters.diffusion import export_stepsaver
from optimum_dynexec.serve import build_fastapi_app
from optimum_dynexec.serve.background import BackgroundServer
from optimum_dynexec.serve.loading import model_kind

DEFAULT_STEPS = 6


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny pipeline whose folder's step policy is the adaptive stop (no predictor to train)."""
    root = tmp_path_factory.mktemp("serve_sd")
    return export_stepsaver(make_tiny_sd(root / "sd"), root / "out", default_steps=DEFAULT_STEPS)


@pytest.fixture(scope="module")
def server(folder):
    with BackgroundServer(build_fastapi_app(folder, ov_config=F32, max_images=2)) as running:
        yield running


def decode(item: dict) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def test_image_request_returns_pngs_equal_to_the_in_process_pipeline(server, folder):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    out = client.images.generate(prompt="a grey dress", n=2, extra_body={"seed": 4})
    assert len(out.data) == 2
    images = [decode(item.model_dump()) for item in out.data]
    steps = [item.model_extra["num_inference_steps"] for item in out.data]
    assert all(1 <= s <= DEFAULT_STEPS for s in steps)
    pipe = OVStableDiffusionPipeline.from_pretrained(folder, ov_config=F32)
    pipe.set_progress_bar_config(disable=True)
    local = pipe("a grey dress", num_images_per_prompt=2, generator=torch.Generator().manual_seed(4))
    assert steps == list(local.num_inference_steps)
    for served, expected in zip(images, local.images):
        assert served.shape == np.asarray(expected).shape
        assert np.abs(served.astype(int) - np.asarray(expected).astype(int)).max() <= 1


def test_fixed_steps_per_request_and_metrics(server):
    response = httpx.post(
        server.url + "/v1/images/generations",
        json={"prompt": "a sneaker", "step_policy": "fixed", "num_inference_steps": 3, "size": "32x32"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert response.json()["num_inference_steps"] == [3] and decode(response.json()["data"][0]).shape == (32, 32, 3)
    text = httpx.get(server.url + "/metrics").text
    for name in ("dynexec_denoising_steps_bucket", "dynexec_steps_saved_total", "dynexec_images_total"):
        assert name in text, name


BAD = [
    ({"prompt": ""}, 400, "string_too_short"),
    ({"prompt": "a cat", "n": 3}, 413, "batch_too_large"),
    ({"prompt": "a cat", "n": 0}, 400, "greater_than_equal"),
    ({"prompt": "a cat", "size": "30x30"}, 400, "invalid_value"),
    ({"prompt": "a cat", "size": "big"}, 400, "string_pattern_mismatch"),
    ({"prompt": "a cat", "response_format": "url"}, 400, "literal_error"),
    ({"prompt": "a cat", "step_policy": "predictor"}, 400, "invalid_value"),
    ({"prompt": "a cat", "quality": "hd"}, 400, "extra_forbidden"),
    ({"prompt": "a cat " * 40}, 400, "context_length_exceeded"),
]


def test_bad_input_gets_its_4xx_and_the_server_still_answers(server):
    for body, status, code in BAD:
        response = httpx.post(server.url + "/v1/images/generations", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["code"] == code, (body, response.json())
    assert httpx.get(server.url + "/health").json()["kind"] == "images"


@pytest.mark.parametrize(
    "class_name", ["StableDiffusionXLPipeline", "OVLatentConsistencyModelPipeline", "FluxPipeline"]
)
def test_pipeline_families_are_recognised_or_refused_by_name(tmp_path, class_name):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    if class_name == "FluxPipeline":
        with pytest.raises(ValueError, match="holds a FluxPipeline"):
            model_kind(tmp_path)
    else:
        assert model_kind(tmp_path) == "images"
