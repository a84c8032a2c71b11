"""Fast tests of the Fashion-MNIST text-to-image model, its prompts, the judge and the image metrics."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import F32

from optimum_dynexec.image_metrics import frechet_distance, ssim
from optimum_dynexec.reference import fashion_mnist as fm
from optimum_dynexec.reference.text_to_image import TextToImageConfig, build_tokenizer, generate, train_text_to_image

needs_data = pytest.mark.skipif(
    not (fm.DATA_DIR / "train-images-idx3-ubyte.gz").is_file(), reason="dataset-fashion-mnist is not installed"
)
PROMPT = ["a photo of a sneaker", "a picture of a small handbag"]


def test_prompts_name_every_class_and_held_out_templates_are_disjoint():
    assert len(fm.CLASS_NAMES) == len(fm.SYNONYMS) == 10
    assert not set(fm.TRAIN_TEMPLATES) & set(fm.HELD_OUT_TEMPLATES)
    assert not set(fm.all_prompts()) & set(fm.all_prompts(held_out=True))
    for held_out in (False, True):
        prompts = fm.prompts_for_labels(range(10), seed=3, held_out=held_out)
        assert prompts == fm.prompts_for_labels(range(10), seed=3, held_out=held_out)
        for label, prompt in enumerate(prompts):
            assert any(name in prompt for name in fm.SYNONYMS[label])
            assert prompt in fm.class_prompts(label, held_out)
    prompts, labels = fm.held_out_prompts(20)
    assert len(prompts) == 20 and np.bincount(labels).tolist() == [2] * 10
    assert "an ankle boot" in fm.class_prompts(9)[1]


def test_prompt_errors():
    with pytest.raises(ValueError, match="at least one"):
        fm.prompts_for_labels([])
    with pytest.raises(ValueError, match="Unknown Fashion-MNIST label"):
        fm.make_prompt(10, np.random.default_rng(0))
    with pytest.raises(TypeError):
        fm.make_prompt("coat", np.random.default_rng(0))
    with pytest.raises(ValueError, match="split"):
        fm.load_fashion_mnist("validation")
    with pytest.raises(ValueError, match="shape"):
        fm.to_pipeline_images(np.zeros((2, 32, 32), np.uint8))


def test_to_pipeline_images():
    images = np.full((2, 28, 28), 255, np.uint8)
    pt, arr = fm.to_pipeline_images(images, "pt"), fm.to_pipeline_images(images, "np")
    assert pt.shape == (2, 3, 32, 32) and pt.min() == -1 and pt.max() == 1 and pt[0, 0, 0, 0] == -1
    assert arr.shape == (2, 32, 32, 3) and arr.min() == 0 and arr.max() == 1


@needs_data
def test_load_fashion_mnist():
    images, labels = fm.load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [1000] * 10


def test_tokenizer_covers_all_prompts(tmp_path):
    from transformers import CLIPTokenizer

    prompts = fm.all_prompts() + fm.all_prompts(held_out=True)
    build_tokenizer(prompts, max_length=16).save_pretrained(tmp_path)
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path)
    assert tokenizer.model_max_length == 16
    for prompt in prompts + [""]:
        ids = tokenizer(prompt).input_ids
        assert len(ids) <= 16 and tokenizer.unk_token_id not in ids[1:-1], prompt
        assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == prompt.replace(" ", "")
    assert tokenizer.tokenize("a photo of a handbag") == ["a</w>", "photo</w>", "of</w>", "a</w>", "handbag</w>"]
    again = build_tokenizer(list(reversed(prompts)), max_length=16)
    assert again.get_vocab() == tokenizer.get_vocab()  # deterministic ids


def test_image_metrics():
    rng = np.random.default_rng(0)
    a = rng.random((3, 32, 32, 3)).astype(np.float32)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, rng.random((3, 32, 32, 3))) < 0.5
    assert ssim((a[..., 0] * 255).astype(np.uint8), (a[..., 0] * 255).astype(np.uint8)) == pytest.approx(1.0)
    x = rng.normal(size=(200, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, x + 1.0) == pytest.approx(8.0, rel=1e-3)
    with pytest.raises(ValueError):
        ssim(a, a[:2])
    with pytest.raises(ValueError):
        frechet_distance(x, x[:, :4])


@needs_data
def test_judge_shapes(tmp_path):
    from PIL import Image

    from optimum_dynexec.reference.judge import JudgeConfig, load_judge, train_judge

    judge = load_judge(train_judge(tmp_path, JudgeConfig.tiny()))
    assert 0 <= judge.metrics["test_accuracy"] <= 1
    rgb = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
    for images in (rgb, rgb[..., :1], fm.load_fashion_mnist("test")[0][:4], [Image.new("RGB", (32, 32))] * 4):
        predicted = judge.predict(images)
        assert predicted.shape == (4,) and predicted.dtype == np.int64 and predicted.max() < 10
        assert judge.features(images).shape == (4, 16)
    with pytest.raises(ValueError, match="at least one"):
        judge.predict([])
    with pytest.raises(FileNotFoundError):
        load_judge(tmp_path / "missing")


TINY = TextToImageConfig.tiny(num_inference_steps=3)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    if not (fm.DATA_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist is not installed")
    out = tmp_path_factory.mktemp("tiny_sd")
    return train_text_to_image(out / "pipe", TINY, checkpoint_dir=out / "ckpt")


def test_tiny_training_outputs(tiny_sd):
    from diffusers import StableDiffusionPipeline

    for name in ("metrics.json", "samples.png", "text_to_image.json", "tokenizer", "unet", "vae", "text_encoder"):
        assert (tiny_sd / name).exists(), name
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd)
    assert pipe.vae_scale_factor == 4 and pipe.tokenizer.model_max_length == TINY.max_length
    images = generate(pipe, PROMPT, num_inference_steps=3, guidance_scale=7.5)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 1
    with pytest.raises(ValueError, match="at least one prompt"):
        generate(pipe, [], 3, 7.5)


def test_tiny_openvino_export_matches_torch(tiny_sd):
    from diffusers import StableDiffusionPipeline
    from optimum.intel import OVStableDiffusionPipeline

    ov = OVStableDiffusionPipeline.from_pretrained(tiny_sd, export=True, ov_config=F32)
    pt = StableDiffusionPipeline.from_pretrained(tiny_sd)
    kwargs = dict(num_inference_steps=4, output_type="np")
    a = ov(PROMPT, generator=torch.Generator().manual_seed(0), **kwargs).images
    b = pt(PROMPT, generator=torch.Generator().manual_seed(0), **kwargs).images
    assert a.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_tiny_training_resumes(tiny_sd, tmp_path):
    from diffusers import UNet2DConditionModel

    class Interrupt(Exception):
        """Raised by the callback to cut training short, as a kill would."""

    def stop(stage, step, loss):
        if stage == "unet" and step == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_text_to_image(tmp_path / "pipe", TINY, checkpoint_dir=tmp_path / "ckpt", callback=stop)
    assert (tmp_path / "ckpt" / "unet.pt").exists() and (tmp_path / "ckpt" / "latents.npy").exists()
    steps = []
    train_text_to_image(
        tmp_path / "pipe", TINY, checkpoint_dir=tmp_path / "ckpt", callback=lambda *args: steps.append(args[:2])
    )
    assert steps == [("unet", 4), ("unet", 5), ("unet", 6)]
    resumed = UNet2DConditionModel.from_pretrained(tmp_path / "pipe" / "unet").state_dict()
    reference = UNet2DConditionModel.from_pretrained(tiny_sd / "unet").state_dict()
    for name, value in reference.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-6)
