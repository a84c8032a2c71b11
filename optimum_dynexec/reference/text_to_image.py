"""A small Stable-Diffusion-shaped text-to-image model trained from scratch on Fashion-MNIST, on CPU.

    from optimum_dynexec.reference.text_to_image import prepare_text_to_image

    folder = prepare_text_to_image()  # a diffusers `StableDiffusionPipeline` folder, cached
    StableDiffusionPipeline.from_pretrained(folder)("a photo of a sneaker", output_type="np").images  # [1, 32, 32, 3]

The pipeline is made of the standard diffusers / transformers classes, so optimum-intel exports it unchanged:

- `AutoencoderKL`: 32x32 RGB images (the 28x28 grey images padded and replicated) to 4x8x8 latents, with
  `scaling_factor` set from the measured latent standard deviation;
- `CLIPTokenizer` with a word-level BPE vocabulary built from the prompt corpus, and a small `CLIPTextModel`;
- `UNet2DConditionModel` (epsilon prediction, cross-attention to the text), trained jointly with the text encoder
  and with empty prompts `uncond_prob` of the time so classifier-free guidance works;
- `DDIMScheduler` with 1000 training timesteps.

Training runs in stages (VAE, latents, UNet + text encoder), each in the library's `TrainingLoop` with batches seeded
by step (so a resumed run reproduces an uninterrupted one) and checkpointed every `checkpoint_every` steps.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from optimum_dynexec.reference.fashion_mnist import (
    CLASS_NAMES,
    all_prompts,
    class_prompts,
    held_out_prompts,
    load_fashion_mnist,
    to_pipeline_images,
)
from optimum_dynexec.training.loop import TrainingLoop
from optimum_dynexec.utils import building, cache_dir, set_seed

logger = logging.getLogger(__name__)

SETTINGS_NAME = "text_to_image.json"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@dataclass
class TextToImageConfig:
    """Sizes and training settings of the Fashion-MNIST text-to-image model; validated on construction.

    The defaults train in about 20 minutes on 2 CPU cores; `TextToImageConfig.tiny()` in a few seconds (tests).
    """

    # VAE: 32x32 -> 8x8 latents (three blocks, vae_scale_factor 4)
    vae_channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 4
    vae_steps: int = 800
    vae_batch_size: int = 32
    vae_learning_rate: float = 1e-3
    vae_kl_weight: float = 1e-6
    # text encoder
    text_hidden_size: int = 64
    text_layers: int = 2
    text_heads: int = 4
    max_length: int = 16
    # UNet
    unet_channels: tuple[int, ...] = (32, 64)
    unet_layers_per_block: int = 1
    unet_heads: int = 4
    unet_steps: int = 3000
    unet_batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    uncond_prob: float = 0.1
    # generation and evaluation
    guidance_scale: float = 7.5
    num_inference_steps: int = 50
    eval_prompts: int = 200
    eval_steps: tuple[int, ...] = (10, 15, 20, 30, 50)
    eval_guidance_scales: tuple[float, ...] = (2.0, 4.0, 7.5)
    grid_seeds: int = 8
    max_train_samples: int | None = None
    seed: int = 0
    checkpoint_every: int = 250

    def __post_init__(self):
        self.vae_channels, self.unet_channels = tuple(self.vae_channels), tuple(self.unet_channels)
        self.eval_steps, self.eval_guidance_scales = tuple(self.eval_steps), tuple(self.eval_guidance_scales)
        if len(self.vae_channels) != 3:
            raise ValueError(f"vae_channels needs 3 entries (32x32 -> 8x8 latents), got {self.vae_channels}.")
        sizes = (self.vae_steps, self.vae_batch_size, self.text_hidden_size, self.text_layers, self.unet_steps)
        if min(sizes + (self.unet_batch_size, self.max_length, self.checkpoint_every)) <= 0:
            raise ValueError(f"Sizes, steps and batch sizes must be positive, got {self}")
        if not 0 <= self.uncond_prob < 1:
            raise ValueError(f"uncond_prob must be in [0, 1), got {self.uncond_prob}.")

    @classmethod
    def tiny(cls, **overrides) -> TextToImageConfig:
        """A configuration that trains in a few seconds, for tests (its images are noise)."""
        settings = dict(
            vae_channels=(8, 8, 8),
            vae_steps=4,
            vae_batch_size=8,
            text_hidden_size=16,
            text_layers=1,
            text_heads=2,
            unet_channels=(32, 32),
            unet_heads=2,
            unet_steps=6,
            unet_batch_size=8,
            warmup_steps=2,
            eval_prompts=0,
            grid_seeds=1,
            max_train_samples=256,
            checkpoint_every=3,
        )
        settings.update(overrides)
        return cls(**settings)

    def short_name(self) -> str:
        """The main settings in a folder name."""
        n = f"-n{self.max_train_samples}" if self.max_train_samples else ""
        unet = "x".join(map(str, self.unet_channels))
        steps = f"v{self.vae_steps}-s{self.unet_steps}-b{self.unet_batch_size}"
        return f"u{unet}-t{self.text_hidden_size}-{steps}{n}-{self.seed}"


# ---------------------------------------------------------------------------------------------------------------------
# components


def build_tokenizer(prompts: list[str], max_length: int = 16):
    """A `CLIPTokenizer` whose BPE vocabulary spells every word of `prompts` (plus all single letters).

    The merges build each word from its end (`t o</w>`, `o to</w>`, `h oto</w>`, `p hoto</w>`): every merge joins a
    letter to a word ending, so merges of different words never conflict and every corpus word is one token. The
    order is deterministic, so the same corpus always gives the same token ids.

    Args:
        prompts (`list[str]`): the prompt corpus.
        max_length (`int`, defaults to 16): the tokenizer's `model_max_length`.

    Returns:
        `CLIPTokenizer`: the tokenizer (save it with `save_pretrained`).
    """
    from transformers import CLIPTokenizer

    clip = CLIPTokenizer(model_max_length=max_length)  # only for its normalizer and pre-tokenizer
    normalize, split = clip.backend_tokenizer.normalizer, clip.backend_tokenizer.pre_tokenizer
    words = sorted({w for p in prompts for w, _ in split.pre_tokenize_str(normalize.normalize_str(p))})
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    symbols = sorted({c for w in words for c in w} | set(letters))
    vocab = {BOS: 0, EOS: 1}
    for token in symbols + [c + "</w>" for c in symbols]:
        vocab.setdefault(token, len(vocab))
    merges = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        suffix = pieces[-1]
        for piece in reversed(pieces[:-1]):
            if piece + suffix not in vocab:
                vocab[piece + suffix] = len(vocab)
                merges.append((piece, suffix))
            suffix = piece + suffix
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def _components(config: TextToImageConfig, vocab_size: int, tokenizer):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=config.vae_channels,
        layers_per_block=1,
        latent_channels=config.latent_channels,
        norm_num_groups=min(16, min(config.vae_channels)),
        sample_size=32,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=config.text_hidden_size,
            intermediate_size=4 * config.text_hidden_size,
            num_hidden_layers=config.text_layers,
            num_attention_heads=config.text_heads,
            max_position_embeddings=config.max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            projection_dim=config.text_hidden_size,
        )
    )
    n = len(config.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        block_out_channels=config.unet_channels,
        layers_per_block=config.unet_layers_per_block,
        down_block_types=("CrossAttnDownBlock2D",) * n,
        up_block_types=("CrossAttnUpBlock2D",) * n,
        cross_attention_dim=config.text_hidden_size,
        attention_head_dim=config.unet_heads,
        norm_num_groups=min(32, min(config.unet_channels)),
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
    return vae, text_encoder, unet, scheduler


# ---------------------------------------------------------------------------------------------------------------------
# training stages


# settings that do not change training: a resumed stage may differ in them
NOT_TRAINING = {"guidance_scale", "num_inference_steps", "eval_prompts", "eval_steps", "eval_guidance_scales"}
NOT_TRAINING |= {"grid_seeds", "checkpoint_every"}


def _train_stage(
    stage: str,
    modules: dict[str, torch.nn.Module],
    steps: int,
    learning_rate: float,
    warmup: int,
    loss_fn: Callable[[int], torch.Tensor],
    checkpoint: Path,
    config: TextToImageConfig,
    ema_decay: float | None = None,
    callback: Callable[[str, int, float], None] | None = None,
) -> dict:
    """Trains `modules` in the library's `TrainingLoop`; `loss_fn(step)` draws its own batch from the step number.

    With `ema_decay`, an exponential moving average of the weights is kept (in the checkpoint's extras) and loaded
    into the modules at the end.

    Returns:
        `dict`: the final loss, the steps and the loss curve.
    """
    model = torch.nn.ModuleDict(modules)
    ema = {"ema": {k: v.detach().clone() for k, v in model.state_dict().items()}} if ema_decay is not None else {}
    settings = {k: v for k, v in asdict(config).items() if k not in NOT_TRAINING}
    loop = TrainingLoop(
        model,
        max_steps=steps,
        learning_rate=learning_rate,
        warmup_steps=warmup,
        weight_decay=0.01,
        checkpoint=checkpoint,
        save_every=config.checkpoint_every,
        settings={**settings, "stage": stage},
        extras=ema,
        seed=config.seed,
        desc=f"training {stage}",
    )

    @torch.no_grad()
    def on_step_end(step: int, loss: float) -> None:
        if ema_decay is not None:
            decay = min(ema_decay, step / (9 + step))
            for name, value in model.state_dict().items():
                average = loop.extras["ema"][name]
                if value.dtype.is_floating_point:
                    average.lerp_(value, 1 - decay)
                else:
                    average.copy_(value)
        if callback is not None:
            callback(stage, step, loss)

    losses = loop.run(loss_fn, on_step_end).losses
    if ema_decay is not None:
        model.load_state_dict(loop.extras["ema"])
    every = max(1, steps // 20)
    curve = [round(float(np.mean(losses[i : i + every])), 5) for i in range(0, len(losses), every)]
    return {"final_loss": float(np.mean(losses[-100:])), "steps": steps, f"loss_every_{every}_steps": curve}


def _train_vae(vae, images: np.ndarray, config: TextToImageConfig, ckpt_dir: Path, callback) -> dict:
    x_all = torch.from_numpy(to_pipeline_images(images, "pt"))

    def loss_fn(step: int) -> torch.Tensor:
        rng = np.random.default_rng([config.seed, 1, step])
        x = x_all[rng.choice(len(x_all), config.vae_batch_size, replace=False)]
        posterior = vae.encode(x).latent_dist
        z = posterior.sample(torch.Generator().manual_seed(config.seed * 1_000_003 + step))
        recon = vae.decode(z).sample
        rec = torch.nn.functional.mse_loss(recon, x) + 0.5 * torch.nn.functional.l1_loss(recon, x)
        return rec + config.vae_kl_weight * posterior.kl().mean()

    return _train_stage(
        "vae",
        {"vae": vae},
        config.vae_steps,
        config.vae_learning_rate,
        min(100, config.vae_steps // 10 + 1),
        loss_fn,
        ckpt_dir / "vae.pt",
        config,
        callback=callback,
    )


@torch.no_grad()
def _encode(vae, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    x_all = to_pipeline_images(images, "pt")
    out = [
        vae.encode(torch.from_numpy(x_all[i : i + batch_size])).latent_dist.mode().numpy()
        for i in tqdm(range(0, len(x_all), batch_size), desc="encoding latents")
    ]
    return np.concatenate(out)


def _prompt_table(tokenizer, max_length: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Token ids of every training prompt, grouped by class, and of the empty prompt."""
    table = [
        tokenizer(
            class_prompts(label), padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        ).input_ids
        for label in range(len(CLASS_NAMES))
    ]
    empty = tokenizer([""], padding="max_length", max_length=max_length, return_tensors="pt").input_ids[0]
    return table, empty


def _train_unet(unet, text_encoder, tokenizer, scheduler, latents, labels, config, ckpt_dir, callback) -> dict:
    table, empty = _prompt_table(tokenizer, config.max_length)
    latents = torch.from_numpy(latents)
    alphas = scheduler.alphas_cumprod

    def loss_fn(step: int) -> torch.Tensor:
        rng = np.random.default_rng([config.seed, 2, step])
        idx = rng.choice(len(latents), config.unet_batch_size, replace=False)
        ids = torch.stack(
            [
                empty if rng.random() < config.uncond_prob else table[labels[i]][rng.integers(len(table[labels[i]]))]
                for i in idx
            ]
        )
        g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, len(alphas), (len(idx),), generator=g)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = unet(noisy, t, encoder_hidden_states=text_encoder(ids)[0]).sample
        return torch.nn.functional.mse_loss(pred, noise)

    return _train_stage(
        "unet",
        {"unet": unet, "text_encoder": text_encoder},
        config.unet_steps,
        config.learning_rate,
        config.warmup_steps,
        loss_fn,
        ckpt_dir / "unet.pt",
        config,
        ema_decay=config.ema_decay,
        callback=callback,
    )


# ---------------------------------------------------------------------------------------------------------------------
# evaluation


def generate(
    pipe, prompts: list[str], num_inference_steps: int, guidance_scale: float, seed: int = 0, batch_size: int = 100
) -> np.ndarray:
    """Generates images with a diffusers `StableDiffusionPipeline` or an optimum-intel `OVStableDiffusionPipeline`.

    Args:
        pipe: the pipeline.
        prompts (`list[str]`): one prompt per image.
        num_inference_steps (`int`): DDIM steps.
        guidance_scale (`float`): classifier-free guidance scale.
        seed (`int`, defaults to 0): the batch starting at prompt `i` uses `Generator().manual_seed(seed + i)`.
        batch_size (`int`, defaults to 100): prompts per pipeline call.

    Returns:
        `np.ndarray`: `float32 [N, 32, 32, 3]` images in [0, 1].

    Raises:
        `ValueError`: for an empty prompt list.
    """
    if not prompts:
        raise ValueError("generate needs at least one prompt.")
    out = []
    for i in range(0, len(prompts), batch_size):
        result = pipe(
            prompts[i : i + batch_size],
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(seed + i),
            output_type="np",
        )
        out.append(np.asarray(result.images, dtype=np.float32))
    return np.concatenate(out)


def sample_grid(pipe, path: Path, seeds: int, num_inference_steps: int, guidance_scale: float) -> Path:
    """Writes a PNG with one row per class (prompt "a photo of a <first synonym>") and `seeds` columns, 3x upscaled.

    Args:
        pipe: the pipeline (see `generate`).
        path (`Path`): the PNG file.
        seeds (`int`): images per class (columns).
        num_inference_steps (`int`): DDIM steps.
        guidance_scale (`float`): classifier-free guidance scale.

    Returns:
        `Path`: `path`.
    """
    from PIL import Image

    prompts = [class_prompts(label)[2] for label in range(len(CLASS_NAMES))]  # "a photo of a <first synonym>"
    rows = []
    for prompt in prompts:
        images = generate(pipe, [prompt] * seeds, num_inference_steps, guidance_scale, seed=0)
        rows.append(np.concatenate(list(images), axis=1))
    grid = (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).round().astype(np.uint8)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(path)
    return path


def evaluate_pipeline(pipe, judge, config: TextToImageConfig) -> dict:
    """Scores generated images for `config.eval_prompts` held-out prompts with the judge.

    Args:
        pipe: the pipeline (see `generate`).
        judge (`Judge`): the Fashion-MNIST judge (`reference.judge.load_judge`).
        config (`TextToImageConfig`): `eval_prompts`, `eval_steps`, `eval_guidance_scales` and the defaults.

    Returns:
        `dict`: the judge accuracy of the prompted class at the default settings (`judge_accuracy`), per DDIM step
        count (`accuracy_by_steps`) and per guidance scale at 20 steps (`accuracy_by_guidance`), and the Frechet
        distance of judge features to as many real test images (`fid_judge_features`; the distance between real test
        and train images, `fid_judge_features_test_vs_train`, is the floor).
    """
    from optimum_dynexec.image_metrics import frechet_distance

    prompts, labels = held_out_prompts(config.eval_prompts, seed=config.seed + 1)
    metrics = {"eval_prompts": config.eval_prompts, "accuracy_by_steps": {}, "accuracy_by_guidance": {}}
    default_images = None
    for steps in tqdm(config.eval_steps, desc="evaluating steps"):
        images = generate(pipe, prompts, steps, config.guidance_scale, seed=config.seed)
        metrics["accuracy_by_steps"][str(steps)] = float((judge.predict(images) == labels).mean())
        if steps == config.num_inference_steps:
            default_images = images
    for scale in tqdm(config.eval_guidance_scales, desc="evaluating guidance"):
        images = generate(pipe, prompts, 20, scale, seed=config.seed)
        metrics["accuracy_by_guidance"][f"{scale:g}"] = float((judge.predict(images) == labels).mean())
    if default_images is None:
        default_images = generate(pipe, prompts, config.num_inference_steps, config.guidance_scale, seed=config.seed)
    test_images, test_labels = load_fashion_mnist("test")
    real = np.concatenate([test_images[test_labels == c][: (labels == c).sum()] for c in range(len(CLASS_NAMES))])
    metrics["judge_accuracy"] = float((judge.predict(default_images) == labels).mean())
    metrics["fid_judge_features"] = frechet_distance(judge.features(default_images), judge.features(real))
    metrics["fid_judge_features_test_vs_train"] = frechet_distance(
        judge.features(real), judge.features(load_fashion_mnist("train")[0][: len(real)])
    )
    return metrics


# ---------------------------------------------------------------------------------------------------------------------
# entry points


def train_text_to_image(
    out: Path,
    config: TextToImageConfig | None = None,
    checkpoint_dir: Path | None = None,
    judge: Path | None = None,
    callback: Callable[[str, int, float], None] | None = None,
) -> Path:
    """Trains the VAE, then the UNet and text encoder, and saves a `StableDiffusionPipeline` folder.

    Args:
        out (`Path`): the output folder (`save_pretrained` layout, plus `metrics.json`, `samples.png` and
            `text_to_image.json` with the default guidance scale and step count).
        config (`TextToImageConfig`, *optional*): the settings (default: `TextToImageConfig()`).
        checkpoint_dir (`Path`, *optional*): where checkpoints, the trained VAE and the cached latents live
            (default: `out`, cleaned up at the end); a run restarted with the same arguments resumes from them.
        judge (`Path`, *optional*): a judge folder (`reference.judge.prepare_judge`) to score generated images; by
            default the prepared default judge when `config.eval_prompts > 0`.
        callback (`Callable[[str, int, float], None]`, *optional*): called after every training step with the stage
            (`"vae"` or `"unet"`), the step count and the loss.

    Returns:
        `Path`: `out`.

    Raises:
        `FileNotFoundError`: when the Fashion-MNIST data is not installed.
    """
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    from optimum_dynexec.reference.judge import load_judge, prepare_judge

    config = config or TextToImageConfig()
    out = Path(out)
    ckpt_dir = Path(checkpoint_dir or out)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    start_time = time.perf_counter()
    timings, metrics = {}, {"config": asdict(config)}
    set_seed(config.seed)
    images, labels = load_fashion_mnist("train")
    if config.max_train_samples:
        images, labels = images[: config.max_train_samples], labels[: config.max_train_samples]

    tokenizer = build_tokenizer(all_prompts() + all_prompts(held_out=True), config.max_length)
    vae, text_encoder, unet, scheduler = _components(config, len(tokenizer), tokenizer)

    vae_dir, latents_file = ckpt_dir / "vae-final", ckpt_dir / "latents.npy"
    if not (vae_dir / "config.json").exists():
        t = time.perf_counter()
        metrics["vae"] = _train_vae(vae, images, config, ckpt_dir, callback)
        timings["vae_seconds"] = time.perf_counter() - t
        vae.save_pretrained(vae_dir)
        (vae_dir / "vae_metrics.json").write_text(json.dumps({**metrics["vae"], **timings}))
        (ckpt_dir / "vae.pt").unlink(missing_ok=True)
    else:
        logger.info("vae: reusing %s", vae_dir)
    vae_metrics = json.loads((vae_dir / "vae_metrics.json").read_text())
    metrics["vae"], timings["vae_seconds"] = vae_metrics, vae_metrics["vae_seconds"]
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    if not latents_file.exists():
        t = time.perf_counter()
        np.save(ckpt_dir / "latents.tmp.npy", _encode(vae, images))
        (ckpt_dir / "latents.tmp.npy").rename(latents_file)
        timings["encode_seconds"] = time.perf_counter() - t
    latents = np.load(latents_file)
    std = float(latents.std())
    vae.register_to_config(scaling_factor=1.0 / std)
    latents = (latents * vae.config.scaling_factor).astype(np.float32)
    metrics["vae"]["latent_std"] = std
    with torch.no_grad():
        x = to_pipeline_images(images[:500], "pt")
        recon = vae.decode(torch.from_numpy(latents[:500]) / vae.config.scaling_factor).sample.numpy()
        metrics["vae"]["reconstruction_mse"] = float(((recon.clip(-1, 1) - x) ** 2).mean() / 4)  # in [0, 1] units

    t = time.perf_counter()
    metrics["unet"] = _train_unet(
        unet, text_encoder, tokenizer, scheduler, latents, labels, config, ckpt_dir, callback
    )
    timings["unet_seconds"] = time.perf_counter() - t

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out)
    if ckpt_dir == out:
        shutil.rmtree(vae_dir)
        latents_file.unlink()
        (ckpt_dir / "unet.pt").unlink(missing_ok=True)
    settings = {
        "guidance_scale": config.guidance_scale,
        "num_inference_steps": config.num_inference_steps,
        "image_size": 32,
        "class_names": CLASS_NAMES,
        "note": "Fashion-MNIST 28x28 images padded to 32x32, grey replicated to RGB; white garment on black.",
    }
    (out / SETTINGS_NAME).write_text(json.dumps(settings, indent=2))
    pipe.set_progress_bar_config(disable=True)
    t = time.perf_counter()
    sample_grid(pipe, out / "samples.png", config.grid_seeds, config.num_inference_steps, config.guidance_scale)
    timings["grid_seconds"] = time.perf_counter() - t
    if config.eval_prompts > 0:
        t = time.perf_counter()
        metrics.update(evaluate_pipeline(pipe, load_judge(judge or prepare_judge()), config))
        timings["eval_seconds"] = time.perf_counter() - t
    timings["total_seconds"] = time.perf_counter() - start_time
    metrics["timings"] = {k: round(v, 1) for k, v in timings.items()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    logger.info("text-to-image model in %s: %s", out, {k: v for k, v in metrics.items() if k != "config"})
    return out


def text_to_image_dir(config: TextToImageConfig | None = None) -> Path:
    """Where `prepare_text_to_image` puts the pipeline for these settings (it may not exist yet)."""
    return cache_dir("models") / f"fashion-sd-{(config or TextToImageConfig()).short_name()}"


def prepare_text_to_image(config: TextToImageConfig | None = None, judge: Path | None = None) -> Path:
    """Trains the text-to-image pipeline once into `cache_dir("models") / "fashion-sd-<settings>"`.

    Checkpoints live in a `.checkpoints` folder beside it, so an interrupted run resumes; they are deleted once the
    folder is complete.

    Args:
        config (`TextToImageConfig`, *optional*): the settings (default: `TextToImageConfig()`).
        judge (`Path`, *optional*): the judge folder (default: the prepared default judge).

    Returns:
        `Path`: the `StableDiffusionPipeline` folder.
    """
    config = config or TextToImageConfig()
    out = text_to_image_dir(config)
    if (out / "metrics.json").exists():
        return out
    ckpt_dir = out.with_name(out.name + ".checkpoints")
    with building(out) as tmp:
        train_text_to_image(tmp, config, checkpoint_dir=ckpt_dir, judge=judge)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return out


def export_text_to_image(hf_folder: str | Path, out: str | Path, **kwargs) -> Path:
    """Exports the pipeline to OpenVINO with optimum-intel (`OVStableDiffusionPipeline`) and saves it to `out`.

    Args:
        hf_folder (`str` or `Path`): a `StableDiffusionPipeline` folder.
        out (`str` or `Path`): the output folder.
        kwargs: passed to `OVStableDiffusionPipeline.from_pretrained` (e.g. `ov_config`, `compile=False`).

    Returns:
        `Path`: `out`.
    """
    from optimum.intel import OVStableDiffusionPipeline

    kwargs.setdefault("compile", False)
    pipe = OVStableDiffusionPipeline.from_pretrained(hf_folder, export=True, **kwargs)
    pipe.save_pretrained(out)
    return Path(out)
