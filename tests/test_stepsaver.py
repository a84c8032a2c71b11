"""StepSaver and adaptive stopping on tiny random Stable Diffusion pipelines: policies, export round trips, errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import F32
from optimum.intel import OVStableDiffusionPipeline as PlainPipeline
from tiny_models import WORDS, make_tiny_sd, make_tiny_step_predictor

from optimum_dynexec import OVStableDiffusionPipeline
from optimum_dynexec.configuration import StepSaverConfig, load_dynexec_config
from optimum_dynexec.exporters.diffusion import diffusion_quantization_config, export_stepsaver
from optimum_dynexec.policies.denoising import AdaptiveStop, choose_steps, fewest_sufficient_steps
from optimum_dynexec.training.classifier import predict_classifier
from optimum_dynexec.training.step_predictor import StepRecords

GRID = [2, 4, 8]


def gens(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    return make_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="module")
def tiny_sd_ov(tiny_sd, tmp_path_factory) -> Path:
    """The tiny pipeline exported once by optimum-intel's plain class: a plain OpenVINO folder the tests load."""
    folder = tmp_path_factory.mktemp("tiny_sd_ov")
    PlainPipeline.from_pretrained(tiny_sd, export=True, compile=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_predictor(tiny_bert, tmp_path_factory) -> Path:
    """A step predictor trained on fake labels: prompts that mention `good` need 2 steps, others 8."""
    return make_tiny_step_predictor(tiny_bert, tmp_path_factory.mktemp("pred") / "predictor", GRID)


@pytest.fixture(scope="module")
def tiny_stepsaver(tiny_sd_ov, tiny_predictor, tmp_path_factory) -> Path:
    return export_stepsaver(
        tiny_sd_ov, tmp_path_factory.mktemp("ss") / "out", predictor=tiny_predictor, default_steps=8
    )


@pytest.fixture(scope="module")
def pipe(tiny_stepsaver):
    pipe = OVStableDiffusionPipeline.from_pretrained(tiny_stepsaver, ov_config=F32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


PROMPTS = ["good day", "bad movie", "good film", "the plot"]


def test_choose_steps_and_labels():
    probs = np.array([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6], [0.2, 0.2, 0.6]])
    assert choose_steps(probs, GRID, 0.5).tolist() == [2, 8, 8]
    assert choose_steps(probs, GRID, 0.4).tolist() == [2, 4, 4]
    assert choose_steps(probs, GRID, 1.0).tolist() == [8, 8, 8]
    # a lucky early pass does not count when a larger count fails
    assert fewest_sufficient_steps([2, 4, 8, 16], [True, False, True, True]) == 8
    assert fewest_sufficient_steps([2, 4, 8], [True, True, False]) == 2  # the reference always passes
    with pytest.raises(ValueError, match="shape"):
        choose_steps(probs[:, :2], GRID)


def test_step_records_relabel():
    records = StepRecords(["a", "b"], [0, 1], GRID, [[0.95, 0.97, 1.0], [0.5, 0.92, 1.0]], None, [], 0.9)
    assert records.relabel(0.9).fewest_steps == [2, 4]
    assert records.relabel(0.96).fewest_steps == [4, 8]


def test_plain_folder_behaves_as_optimum_intel(tiny_sd_ov):
    theirs = PlainPipeline.from_pretrained(tiny_sd_ov, ov_config=F32)  # a plain optimum-intel folder
    ours = OVStableDiffusionPipeline.from_pretrained(tiny_sd_ov, ov_config=F32)
    assert ours.step_config is None
    a = ours(PROMPTS[:2], num_inference_steps=3, generator=gens(2), output_type="np")
    b = theirs(PROMPTS[:2], num_inference_steps=3, generator=gens(2), output_type="np")
    np.testing.assert_array_equal(a.images, b.images)
    assert a.num_inference_steps == [3, 3]
    with pytest.raises(ValueError, match="no step predictor"):
        OVStableDiffusionPipeline.from_pretrained(tiny_sd_ov, step_policy="predictor")


def test_predictor_export_round_trip(pipe, tiny_stepsaver, tiny_predictor, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = load_dynexec_config(tiny_stepsaver)
    assert isinstance(config, StepSaverConfig) and config.policy == "predictor" and config.step_buckets == GRID
    torch_model = AutoModelForSequenceClassification.from_pretrained(tiny_predictor)
    reference = predict_classifier(torch_model, AutoTokenizer.from_pretrained(tiny_predictor), PROMPTS)
    np.testing.assert_allclose(pipe.step_predictor.probabilities(PROMPTS), reference, atol=1e-4)
    assert pipe.predict_steps(PROMPTS) == choose_steps(reference, GRID).tolist()
    assert pipe.predict_steps(PROMPTS) == [2, 8, 2, 8]  # it learnt the fake rule
    pipe.save_pretrained(tmp_path / "again")
    again = OVStableDiffusionPipeline.from_pretrained(tmp_path / "again", ov_config=F32)
    assert again.step_config == config and again.predict_steps(PROMPTS) == pipe.predict_steps(PROMPTS)


def test_predicted_steps_per_prompt(pipe):
    out = pipe(PROMPTS, generator=gens(4), output_type="np")
    assert out.num_inference_steps == [2, 8, 2, 8] == pipe.last_num_inference_steps
    # each image is what a fixed run of its own step count gives for the same seed
    for i, prompt in enumerate(PROMPTS):
        single = pipe(prompt, num_inference_steps=out.num_inference_steps[i], generator=gens(1, i), output_type="np")
        np.testing.assert_allclose(out.images[i], single.images[0], atol=1e-5)
    pil = pipe(PROMPTS, generator=gens(4))
    assert len(pil.images) == 4 and pil.images[0].size == (32, 32)
    images, nsfw = pipe(PROMPTS, generator=gens(4), output_type="np", return_dict=False)
    np.testing.assert_allclose(images, out.images, atol=1e-6)


def test_batching_max_and_images_per_prompt(tiny_stepsaver):
    pipe = OVStableDiffusionPipeline.from_pretrained(tiny_stepsaver, ov_config=F32)
    pipe.step_config.batching = "max"
    out = pipe(PROMPTS[:2], generator=gens(2), output_type="np")
    assert out.num_inference_steps == [8, 8]
    pipe.step_config.batching = "group"
    out = pipe(PROMPTS[:2], num_images_per_prompt=2, generator=gens(4), output_type="np")
    assert out.images.shape[0] == 4 and out.num_inference_steps == [2, 2, 8, 8]


def test_explicit_steps_win(pipe):
    out = pipe(PROMPTS, num_inference_steps=3, generator=gens(4), output_type="np")
    assert out.num_inference_steps == [3] * 4
    named = pipe(PROMPTS, num_inference_steps=3, step_policy="predictor", generator=gens(4), output_type="np")
    assert named.num_inference_steps == [3] * 4
    positional = pipe(PROMPTS[0], None, None, 3, generator=gens(1), output_type="np")  # SD's positional order
    assert positional.num_inference_steps == [3]
    np.testing.assert_allclose(positional.images[0], out.images[0], atol=1e-6)


def test_fixed_policy_uses_default_steps(pipe):
    out = pipe(PROMPTS[:1], step_policy="fixed", generator=gens(1), output_type="np")
    assert out.num_inference_steps == [8]


def test_adaptive_stop_decodes_last_clean_estimate(tiny_sd_ov):
    pipe = OVStableDiffusionPipeline.from_pretrained(tiny_sd_ov, ov_config=F32, step_tolerance=0.5)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(PROMPTS[:2], step_policy="adaptive", num_inference_steps=30, generator=gens(2), output_type="latent")
    used = out.num_inference_steps[0]
    assert pipe.step_config.min_steps <= used < 30
    # the returned latents are the scheduler's clean-latent estimate at the step where it stopped
    seen = {}

    def capture(p, i, t, kwargs):
        return kwargs

    original = pipe.scheduler.step

    def step(*args, **kwargs):
        result = original(*args, **{**kwargs, "return_dict": True})
        seen[len(seen)] = result.pred_original_sample
        return result.to_tuple()

    pipe.scheduler.step = step
    try:
        pipe(
            PROMPTS[:2], num_inference_steps=30, generator=gens(2), output_type="latent", callback_on_step_end=capture
        )
    finally:
        del pipe.scheduler.step
    torch.testing.assert_close(torch.as_tensor(out.images), seen[used - 1], atol=1e-5, rtol=1e-5)
    images = pipe(PROMPTS[:2], step_policy="adaptive", num_inference_steps=30, generator=gens(2), output_type="np")
    assert images.images.shape == (2, 32, 32, 3) and 0.0 <= images.images.min() and images.images.max() <= 1.0
    assert images.num_inference_steps == [used, used]


def test_adaptive_with_tiny_tolerance_runs_every_step(tiny_sd_ov):
    pipe = OVStableDiffusionPipeline.from_pretrained(tiny_sd_ov, ov_config=F32, step_tolerance=1e-9)
    pipe.set_progress_bar_config(disable=True)
    adaptive = pipe(PROMPTS[:1], step_policy="adaptive", num_inference_steps=6, generator=gens(1), output_type="np")
    fixed = pipe(PROMPTS[:1], num_inference_steps=6, generator=gens(1), output_type="np")
    assert adaptive.num_inference_steps == [6]
    np.testing.assert_array_equal(adaptive.images, fixed.images)


def test_adaptive_chains_a_user_callback(tiny_sd_ov):
    pipe = OVStableDiffusionPipeline.from_pretrained(tiny_sd_ov, ov_config=F32, step_tolerance=0.5)
    calls = []

    def user(p, i, t, kwargs):
        calls.append(i)
        return {}

    out = pipe(
        PROMPTS[:1], step_policy="adaptive", num_inference_steps=20, callback_on_step_end=user, output_type="np"
    )
    assert len(calls) == out.num_inference_steps[0]


def test_adaptive_needs_clean_latents(tiny_sd_ov):
    from diffusers import DPMSolverMultistepScheduler

    pipe = OVStableDiffusionPipeline.from_pretrained(tiny_sd_ov, ov_config=F32)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="pred_original_sample"):
        pipe("a bag", step_policy="adaptive", num_inference_steps=4)


def test_quantized_pipeline_runs(tiny_sd_ov, tiny_predictor, tmp_path):
    from optimum_dynexec.exporters.quantization import quantization_config_from_flags

    out = export_stepsaver(
        tiny_sd_ov,
        tmp_path / "int8",
        predictor=tiny_predictor,
        default_steps=8,
        quantization_config=diffusion_quantization_config(weight_format="int8"),
        predictor_quantization_config=quantization_config_from_flags(weight_format="int8"),
    )
    config = load_dynexec_config(out)
    assert config.quantization == {"pipeline": {"weight_format": "int8"}, "predictor": {"weight_format": "int8"}}
    pipe = OVStableDiffusionPipeline.from_pretrained(out, ov_config=F32)
    result = pipe(PROMPTS[:2], generator=gens(2), output_type="np")
    assert result.images.shape == (2, 32, 32, 3) and np.isfinite(result.images).all()
    assert result.num_inference_steps == pipe.predict_steps(PROMPTS[:2])
    hybrid = export_stepsaver(
        tiny_sd_ov,
        tmp_path / "hybrid",
        quantization_config=diffusion_quantization_config("hybrid", calibration_prompts=PROMPTS, num_samples=2),
    )
    assert load_dynexec_config(hybrid).quantization["pipeline"] == {"quant_mode": "hybrid"}
    result = OVStableDiffusionPipeline.from_pretrained(hybrid)(PROMPTS[:1], num_inference_steps=2, output_type="np")
    assert np.isfinite(result.images).all()


def test_errors(tiny_sd, tiny_stepsaver, tmp_path, pipe):
    with pytest.raises(ValueError, match="Unknown step policy"):
        OVStableDiffusionPipeline.from_pretrained(tiny_stepsaver, step_policy="fastest")
    with pytest.raises(ValueError, match="Unknown step policy"):
        pipe("a bag", step_policy="fastest")
    with pytest.raises(ValueError, match="tolerance"):
        OVStableDiffusionPipeline.from_pretrained(tiny_stepsaver, step_tolerance=1.5)
    with pytest.raises(ValueError, match="tolerance"):
        StepSaverConfig(policy="adaptive", predictor=None, tolerance=0)
    with pytest.raises(ValueError, match="tolerance"):
        AdaptiveStop(tolerance=-1)
    with pytest.raises(ValueError, match="empty"):
        pipe([])
    with pytest.raises(ValueError, match="empty"):
        pipe.predict_steps([])
    with pytest.raises(ValueError, match="reads the prompt text"):
        pipe(prompt_embeds=torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="quant-mode"):
        diffusion_quantization_config("int8")
    with pytest.raises(ValueError, match="calibration prompts"):
        diffusion_quantization_config("hybrid")
    with pytest.raises(ValueError, match="weight-format"):
        diffusion_quantization_config(weight_format="int4")
    # a folder whose config names a predictor that is missing
    missing = tmp_path / "missing"
    export_stepsaver(tiny_stepsaver, missing, policy="adaptive")
    config = load_dynexec_config(missing)
    data = {**config.to_dict(), "policy": "predictor", "predictor": "step_predictor", "step_buckets": GRID}
    (missing / "dynexec_config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="holds no step predictor"):
        OVStableDiffusionPipeline.from_pretrained(missing)
    with pytest.raises(ValueError, match="needs a trained step predictor"):
        export_stepsaver(tiny_sd, tmp_path / "x", policy="predictor")


def test_cli_trains_and_attaches_a_predictor(tiny_sd, tiny_bert, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(" ".join(WORDS[i : i + 3]) for i in range(12)) + "\n")
    out = tmp_path / "cli"
    cli = [str(Path(sys.executable).parent / "optimum-cli"), "export", "dynexec"]
    args = ["--model", tiny_sd, "--task", "text-to-image", "--train-step-predictor", "--train-prompts", prompts]
    args += ["--predictor-base", tiny_bert, "--step-grid", "2", "4", "8", "--seeds-per-prompt", "1", out]
    result = subprocess.run([*cli, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    config = load_dynexec_config(out)
    assert config.policy == "predictor" and config.step_buckets == GRID and config.default_steps == 8
    records = StepRecords.load(out / "step_predictor_training" / "step_records.json")
    assert len(records.prompts) == 12 and set(records.fewest_steps) <= set(GRID)
    pipe = OVStableDiffusionPipeline.from_pretrained(out, ov_config=F32)
    steps = pipe("the plot", output_type="np").num_inference_steps
    assert steps[0] in GRID
    bad = subprocess.run(
        [*cli, "--model", str(tiny_sd), "--task", "text-to-image", "--train-step-predictor", str(tmp_path / "y")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2 and "--train-prompts" in bad.stderr
