"""Step policies on the other text-to-image families optimum-intel exports: SDXL and latent consistency (LCM).

One tiny random pipeline per family (built from configs, 16x16 images), exported once by optimum-intel through our
class (`export=True`); then: our class is what loading returns, the fixed policy equals optimum-intel's plain class,
the adaptive stop stops on the family's own clean-latent estimate, the predictor gives each prompt its own steps.
"""

import json
from argparse import ArgumentParser
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import F32
from optimum.intel import OVLatentConsistencyModelPipeline as PlainLCM
from optimum.intel import OVStableDiffusionXLPipeline as PlainSDXL
from tiny_models import make_clip_char_tokenizer, make_tiny_step_predictor

from optimum_dynexec import OVLatentConsistencyModelPipeline, OVStableDiffusionXLPipeline
from optimum_dynexec.commands.export_dynexec import DynexecExportCommand, parse_args_dynexec
from optimum_dynexec.configuration import StepSaverConfig, load_dynexec_config
from optimum_dynexec.exporters.diffusion import export_step_predictor, export_stepsaver
from optimum_dynexec.modeling_diffusion import StepSaverPipelineOutput, StepSaverXLPipelineOutput
from optimum_dynexec.policies.denoising import recording_clean_latents

GRID = [2, 4, 8]
PROMPTS = ["good day", "bad movie", "good film", "the plot"]
SECOND_PROMPTS = ["a red hat", "a blue sky", "a dog", "two cats"]  # SDXL's prompt_2, sliced with the prompts


def gens(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def _text_encoder(tokenizer, with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=16,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def _vae():
    from diffusers import AutoencoderKL

    # two blocks: latents are half the image size (8x8 latents, 16x16 images)
    return AutoencoderKL(
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=16,
    ).eval()


def _unet(**family):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        norm_num_groups=8,
        **family,
    ).eval()


def make_tiny_sdxl(folder: Path) -> Path:
    """A random SDXL pipeline: two CLIP text encoders (the second with a projection), a UNet conditioned on their
    concatenated states and on SDXL's size/crop ids, Euler (SDXL's scheduler)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    torch.manual_seed(0)
    tokenizer = make_clip_char_tokenizer()
    unet = _unet(
        cross_attention_dim=32,  # the two encoders' hidden states side by side
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 16,  # six size/crop ids and the pooled projection
        use_linear_projection=True,
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    pipe = StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=_text_encoder(tokenizer),
        text_encoder_2=_text_encoder(tokenizer, with_projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def make_tiny_lcm(folder: Path) -> Path:
    """A random latent-consistency pipeline: one CLIP text encoder, a UNet with a guidance-scale embedding input
    (`time_cond_proj_dim`), the LCM scheduler."""
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    torch.manual_seed(0)
    tokenizer = make_clip_char_tokenizer()
    pipe = LatentConsistencyModelPipeline(
        vae=_vae(),
        text_encoder=_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=_unet(cross_attention_dim=16, time_cond_proj_dim=8),
        scheduler=LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


FAMILIES = {
    # name: (builder, our class, optimum-intel's class, our output class, per-prompt call arguments)
    "sdxl": (make_tiny_sdxl, OVStableDiffusionXLPipeline, PlainSDXL, StepSaverXLPipelineOutput, "prompt_2"),
    "lcm": (make_tiny_lcm, OVLatentConsistencyModelPipeline, PlainLCM, StepSaverPipelineOutput, None),
}


def extra_prompts(family: str, rows) -> dict:
    """The family's per-prompt arguments besides `prompt` for the prompts `rows` (a list or one index)."""
    name = FAMILIES[family][4]
    if name is None:
        return {}
    return {name: SECOND_PROMPTS[rows] if isinstance(rows, int) else [SECOND_PROMPTS[r] for r in rows]}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    """(name, OpenVINO folder): the family's tiny pipeline exported once, by optimum-intel through our class."""
    name = request.param
    build, ours, *_ = FAMILIES[name]
    root = tmp_path_factory.mktemp(name)
    exported = ours.from_pretrained(build(root / "hf"), export=True, compile=False)
    assert type(exported) is ours
    exported.save_pretrained(root / "ov")
    return name, root / "ov"


@pytest.fixture(scope="module")
def tiny_predictor(tiny_bert, tmp_path_factory) -> Path:
    """The tiny step predictor (prompts with `good` need 2 steps, others 8), in OpenVINO once for both families."""
    folder = tmp_path_factory.mktemp("pred")
    trained = make_tiny_step_predictor(tiny_bert, folder / "predictor", GRID)
    assert export_step_predictor(trained, folder / "ov") == GRID
    return folder / "ov"


def run_export_command(*args) -> None:
    """`optimum-cli export dynexec ARGS`, run in this process (each optimum-cli start costs seconds)."""
    parser = ArgumentParser()
    parse_args_dynexec(parser)
    command = DynexecExportCommand.__new__(DynexecExportCommand)
    command.args = parser.parse_args(list(map(str, args)))
    command.run()


def test_fixed_policy_equals_optimum_intel(family):
    name, folder = family
    _, ours_class, plain_class, output_class, _ = FAMILIES[name]
    ours = ours_class.from_pretrained(folder, ov_config=F32)
    theirs = plain_class.from_pretrained(folder, ov_config=F32)
    assert type(ours) is ours_class and ours.step_config is None
    prompts = [0, 1]
    call = {"prompt": [PROMPTS[i] for i in prompts], **extra_prompts(name, prompts), "output_type": "np"}
    # no step count: both run the family's own default (50 for SDXL, 4 for LCM)
    a = ours(**call, step_policy="fixed", generator=gens(2))
    b = theirs(**call, generator=gens(2))
    assert isinstance(a, output_class) and a.images.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.num_inference_steps == [ours_class.default_num_inference_steps()] * 2
    # the family's tuple for return_dict=False (SDXL: images alone; LCM: images and NSFW flags)
    tuple_a = ours(**call, num_inference_steps=2, generator=gens(2), return_dict=False)
    tuple_b = theirs(**call, num_inference_steps=2, generator=gens(2), return_dict=False)
    assert len(tuple_a) == len(tuple_b)
    np.testing.assert_array_equal(tuple_a[0], tuple_b[0])
    assert ours.last_num_inference_steps == [2, 2]


def _clean_estimates(pipe, name: str, call: dict) -> list[torch.Tensor]:
    """Every step's clean-latent estimate in a plain run: SDXL's scheduler `pred_original_sample`, LCM's
    `denoised` (read through a step callback)."""
    seen = []
    if name == "lcm":

        def capture(p, i, t, kwargs):
            seen.append(kwargs["denoised"])
            return {}

        pipe(**call, callback_on_step_end=capture, callback_on_step_end_tensor_inputs=["denoised"])
        return seen

    class Recorder:
        def reset(self):
            seen.clear()

        def record(self, clean):
            seen.append(clean)

    with recording_clean_latents(pipe.scheduler, Recorder()):
        pipe(**call)
    return seen


def test_adaptive_stop_on_the_family_estimate(family):
    name, folder = family
    ours_class = FAMILIES[name][1]
    pipe = ours_class.from_pretrained(folder, ov_config=F32, step_tolerance=0.9)
    assert pipe.step_config.tolerance == 0.9 and pipe.step_config.policy == "fixed"
    call = {"prompt": PROMPTS[:2], **extra_prompts(name, [0, 1]), "num_inference_steps": 12}
    out = pipe(**call, step_policy="adaptive", generator=gens(2), output_type="latent")
    used = out.num_inference_steps[0]
    assert out.num_inference_steps == [used, used] and pipe.step_config.min_steps <= used < 12
    assert len(pipe.last_adaptive_changes) == used - 1
    # the returned latents are the family's clean-latent estimate at the step where it stopped
    estimates = _clean_estimates(pipe, name, dict(call, generator=gens(2), output_type="latent"))
    torch.testing.assert_close(torch.as_tensor(out.images), estimates[used - 1], atol=1e-5, rtol=1e-5)
    calls = []
    images = pipe(
        **call,
        step_policy="adaptive",
        generator=gens(2),
        output_type="np",
        callback_on_step_end=lambda p, i, t, kwargs: calls.append(i) or {},
    )
    assert images.num_inference_steps == [used, used] and len(calls) == used  # the user's callback, until the stop
    # a tolerance nothing meets runs every step and changes nothing
    pipe.step_config.tolerance = 1e-9
    adaptive = pipe(**call, step_policy="adaptive", generator=gens(2), output_type="np")
    fixed = pipe(**call, generator=gens(2), output_type="np")
    assert adaptive.num_inference_steps == [12, 12]
    np.testing.assert_array_equal(adaptive.images, fixed.images)


def test_predictor_gives_each_prompt_its_steps(family, tiny_predictor, tmp_path):
    name, folder = family
    ours_class = FAMILIES[name][1]
    out_dir = tmp_path / "dynexec"
    run_export_command("--model", folder, "--task", "text-to-image", "--step-predictor", tiny_predictor, out_dir)
    config = load_dynexec_config(out_dir)
    assert config.policy == "predictor" and config.step_buckets == GRID
    assert config.default_steps == ours_class.default_num_inference_steps()
    pipe = ours_class.from_pretrained(out_dir, ov_config=F32)
    assert type(pipe) is ours_class and pipe.step_config == config
    predicted = pipe.predict_steps(PROMPTS)
    assert predicted == [2, 8, 2, 8]  # the tiny predictor's rule: prompts with "good" need 2 steps
    out = pipe(PROMPTS, **extra_prompts(name, range(4)), generator=gens(4), output_type="np")
    assert out.num_inference_steps == predicted == pipe.last_num_inference_steps
    for i, prompt in enumerate(PROMPTS):  # each image is a fixed run of its own step count, same seed
        single = pipe(
            prompt, **extra_prompts(name, i), num_inference_steps=predicted[i], generator=gens(1, i), output_type="np"
        )
        np.testing.assert_allclose(out.images[i], single.images[0], atol=1e-5)


def test_bad_step_policy(family):
    name, folder = family
    ours_class = FAMILIES[name][1]
    with pytest.raises(ValueError, match="Unknown step policy 'fastest'"):
        ours_class.from_pretrained(folder, step_policy="fastest")
    with pytest.raises(ValueError, match="no step predictor"):
        ours_class.from_pretrained(folder, step_policy="predictor")
    pipe = ours_class.from_pretrained(folder, compile=False)
    with pytest.raises(ValueError, match="Unknown step policy 'fastest'"):
        pipe("a bag", step_policy="fastest")
    with pytest.raises(ValueError, match="empty"):
        pipe([])


def test_unsupported_pipelines_are_refused(tmp_path):
    other = tmp_path / "flux"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ValueError, match="holds a FluxPipeline; step policies serve"):
        export_stepsaver(other, tmp_path / "out")
    with pytest.raises(ValueError, match="tolerance"):
        StepSaverConfig(policy="adaptive", predictor=None, tolerance=1.5)
