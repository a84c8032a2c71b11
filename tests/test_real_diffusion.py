"""The real Fashion-MNIST pipeline with its StepSaver predictor (skipped until `make models` has prepared it)."""

import numpy as np
import pytest
import torch
from conftest import F32, needs_prepared
from optimum.intel import OVStableDiffusionPipeline as PlainPipeline

from optimum_dynexec import OVStableDiffusionPipeline
from optimum_dynexec.configuration import load_dynexec_config
from optimum_dynexec.reference.diffusion import stepsaver_export_path

pytestmark = needs_prepared("diffusion")


@pytest.fixture(scope="module")
def prompts():
    from optimum_dynexec.reference.fashion_mnist import held_out_prompts

    return held_out_prompts(20, seed=11)


@pytest.fixture(scope="module")
def judge():
    from optimum_dynexec.reference.diffusion import fashion_judge

    return fashion_judge()


def test_stepsaver_on_the_real_pipeline(prompts, judge):
    folder = stepsaver_export_path("fp32")
    texts, labels = prompts
    pipe = OVStableDiffusionPipeline.from_pretrained(folder, ov_config=F32)
    plain = PlainPipeline.from_pretrained(folder, ov_config=F32)
    for p in (pipe, plain):
        p.set_progress_bar_config(disable=True)
    config = load_dynexec_config(folder)
    steps = pipe.predict_steps(texts)
    assert set(steps) <= set(config.step_buckets) and np.mean(steps) < config.default_steps
    generators = [torch.Generator().manual_seed(i) for i in range(len(texts))]
    out = pipe(texts, generator=generators, output_type="np")
    assert out.num_inference_steps == steps
    # each prompt's image is the plain pipeline's image at that prompt's predicted steps
    for i in (0, 7):
        single = plain(
            texts[i], num_inference_steps=steps[i], generator=torch.Generator().manual_seed(i), output_type="np"
        )
        np.testing.assert_allclose(out.images[i], single.images[0], atol=1e-4)
    # the images still show the prompted class (the judge is ~90% accurate on real images)
    assert (judge.predict(out.images) == labels).mean() >= 0.7


def test_adaptive_stop_on_the_real_pipeline(prompts, judge):
    texts, labels = prompts
    pipe = OVStableDiffusionPipeline.from_pretrained(stepsaver_export_path("fp32"), ov_config=F32)
    pipe.set_progress_bar_config(disable=True)
    images, steps = [], []
    for i, text in enumerate(texts[:10]):
        out = pipe(text, step_policy="adaptive", generator=torch.Generator().manual_seed(i), output_type="np")
        images.append(out.images[0])
        steps.append(out.num_inference_steps[0])
    assert max(steps) <= 50 and np.mean(steps) < 50
    assert (judge.predict(np.stack(images)) == labels[:10]).mean() >= 0.6


def test_int8_pipeline_runs(prompts):
    folder = stepsaver_export_path("int8")
    config = load_dynexec_config(folder)
    assert config.quantization["pipeline"] == {"weight_format": "int8"}
    pipe = OVStableDiffusionPipeline.from_pretrained(folder)
    out = pipe(prompts[0][:4], output_type="np")
    assert out.images.shape == (4, 32, 32, 3) and np.isfinite(out.images).all()
    assert out.num_inference_steps == pipe.predict_steps(prompts[0][:4])
