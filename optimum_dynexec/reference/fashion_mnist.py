"""Fashion-MNIST from the Debian `dataset-fashion-mnist` package, and the text prompts that name its classes.

The prompts come from per-class synonyms times phrasing templates. The held-out templates never occur in training
(they recombine the training words in new phrasings) so benchmarks can prompt with text the model never saw.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SIZE = 28
PIPELINE_IMAGE_SIZE = 32

CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

SYNONYMS: list[list[str]] = [
    ["t-shirt", "tee", "top", "tshirt"],
    ["trousers", "pants", "jeans", "trouser"],
    ["pullover", "sweater", "jumper"],
    ["dress", "gown", "frock"],
    ["coat", "jacket", "overcoat"],
    ["sandal", "sandals", "flip-flop"],
    ["shirt", "blouse", "button-down shirt"],
    ["sneaker", "trainer", "running shoe"],
    ["bag", "handbag", "purse"],
    ["ankle boot", "boot", "short boot"],
]

TRAIN_TEMPLATES = [
    "{x}",
    "a {x}",
    "a photo of a {x}",
    "a grey {x} on a black background",
    "picture of {x}",
    "a small {x}",
    "an image of a {x}",
    "a low resolution photo of a {x}",
]

HELD_OUT_TEMPLATES = [
    "a picture of a small {x}",
    "photo of a grey {x}",
    "a {x} on a black background",
    "small grey {x}",
    "an image of a small {x} on a black background",
]


def _data_file(split: str, kind: str) -> Path:
    prefix = {"train": "train", "test": "t10k"}
    if split not in prefix:
        raise ValueError(f"Unknown Fashion-MNIST split {split!r}; choose `train` or `test`.")
    path = DATA_DIR / f"{prefix[split]}-{kind}-ubyte.gz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing. Install the Debian package with `apt-get install dataset-fashion-mnist`."
        )
    return path


def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Reads one Fashion-MNIST split from its idx gzip files.

    Args:
        split (`str`, defaults to `"train"`): `"train"` (60000 images) or `"test"` (10000 images).

    Returns:
        `tuple[np.ndarray, np.ndarray]`: images `uint8 [N, 28, 28]` (white garment on black) and labels `int64 [N]`.

    Raises:
        `ValueError`: for an unknown split or a corrupt file.
        `FileNotFoundError`: when the Debian package `dataset-fashion-mnist` is not installed.
    """
    with gzip.open(_data_file(split, "images-idx3"), "rb") as f:
        raw = f.read()
    magic, n, rows, cols = np.frombuffer(raw[:16], dtype=">u4")
    if magic != 2051 or len(raw) != 16 + n * rows * cols:
        raise ValueError(f"Corrupt Fashion-MNIST image file for split {split!r}.")
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols).copy()
    with gzip.open(_data_file(split, "labels-idx1"), "rb") as f:
        raw = f.read()
    magic, m = np.frombuffer(raw[:8], dtype=">u4")
    if magic != 2049 or m != n:
        raise ValueError(f"Corrupt Fashion-MNIST label file for split {split!r}.")
    labels = np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)
    return images, labels


def _check_label(label: int) -> int:
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise TypeError(f"A Fashion-MNIST label must be an integer, got {label!r}.")
    if not 0 <= int(label) < len(CLASS_NAMES):
        raise ValueError(f"Unknown Fashion-MNIST label {label}; labels are 0..{len(CLASS_NAMES) - 1}.")
    return int(label)


def _fill(template: str, name: str) -> str:
    return re.sub(r"\ba ([aeiou])", r"an \1", template.format(x=name))  # "a ankle boot" -> "an ankle boot"


def make_prompt(label: int, rng: np.random.Generator, held_out: bool = False) -> str:
    """A prompt naming the class `label` with a random synonym and template.

    Args:
        label (`int`): the Fashion-MNIST class, 0..9.
        rng (`np.random.Generator`): the random source.
        held_out (`bool`, defaults to `False`): use the held-out templates (never seen in training).

    Returns:
        `str`: the prompt.

    Raises:
        `ValueError`: for a label outside 0..9.
        `TypeError`: for a non-integer label.
    """
    label = _check_label(label)
    templates = HELD_OUT_TEMPLATES if held_out else TRAIN_TEMPLATES
    synonym = SYNONYMS[label][rng.integers(len(SYNONYMS[label]))]
    return _fill(templates[rng.integers(len(templates))], synonym)


def prompts_for_labels(labels, seed: int = 0, held_out: bool = False) -> list[str]:
    """One random prompt per label, reproducible from `seed`.

    Args:
        labels (`Sequence[int]` or `np.ndarray`): the classes.
        seed (`int`, defaults to 0): seeds the choice of synonyms and templates.
        held_out (`bool`, defaults to `False`): use the held-out templates.

    Returns:
        `list[str]`: one prompt per label.

    Raises:
        `ValueError`: for an empty label list or a label outside 0..9.
    """
    labels = list(labels)
    if not labels:
        raise ValueError("prompts_for_labels needs at least one label.")
    rng = np.random.default_rng(seed)
    return [make_prompt(label, rng, held_out) for label in labels]


def held_out_prompts(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """`n` held-out prompts cycling over the classes (balanced), for benchmarks.

    Returns:
        `tuple[list[str], np.ndarray]`: the prompts and their labels `int64 [n]`.

    Raises:
        `ValueError`: when `n` is not positive.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}.")
    labels = np.arange(n, dtype=np.int64) % len(CLASS_NAMES)
    return prompts_for_labels(labels, seed=seed, held_out=True), labels


def class_prompts(label: int, held_out: bool = False) -> list[str]:
    """Every prompt for one class (its synonyms times the training or the held-out templates).

    Raises:
        `ValueError`: for a label outside 0..9.
    """
    templates = HELD_OUT_TEMPLATES if held_out else TRAIN_TEMPLATES
    return [_fill(t, s) for s in SYNONYMS[_check_label(label)] for t in templates]


def all_prompts(held_out: bool = False) -> list[str]:
    """Every prompt of all classes (training or held-out templates), e.g. to build a tokenizer."""
    return [p for label in range(len(CLASS_NAMES)) for p in class_prompts(label, held_out)]


def to_pipeline_images(images: np.ndarray, output: str = "pt") -> np.ndarray:
    """Converts Fashion-MNIST images to the pipeline's 32x32 three-channel format (zero padding: black border).

    Args:
        images (`np.ndarray`): `uint8 [N, 28, 28]` as returned by `load_fashion_mnist`.
        output (`str`, defaults to `"pt"`): `"pt"` for the VAE input layout `float32 [N, 3, 32, 32]` in [-1, 1];
            `"np"` for the layout of the pipeline's `output_type="np"`, `float32 [N, 32, 32, 3]` in [0, 1].

    Returns:
        `np.ndarray`: the converted images.

    Raises:
        `ValueError`: for images that are not `[N, 28, 28]` or an unknown `output`.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"Expected images of shape [N, 28, 28], got {images.shape}.")
    pad = (PIPELINE_IMAGE_SIZE - IMAGE_SIZE) // 2
    x = np.pad(images.astype(np.float32) / 255.0, ((0, 0), (pad, pad), (pad, pad)))
    if output == "np":
        return np.repeat(x[..., None], 3, axis=-1)
    if output == "pt":
        return np.repeat(x[:, None] * 2.0 - 1.0, 3, axis=1)
    raise ValueError(f"Unknown output {output!r}; choose `pt` or `np`.")
