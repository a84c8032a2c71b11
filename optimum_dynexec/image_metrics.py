"""Image-quality metrics for generated images: SSIM against a reference, and a Frechet distance on features."""

from __future__ import annotations

import numpy as np


def _as_float_images(images) -> np.ndarray:
    if isinstance(images, (list, tuple)):
        images = np.stack([np.asarray(im) for im in images])
    x = np.asarray(images)
    return x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)


def ssim(a, b) -> float:
    """Mean structural similarity of two image batches, image by image (scikit-image's `structural_similarity`).

    Args:
        a: images `[N, H, W]` or `[N, H, W, C]` (or a list of PIL images), `uint8` or float in [0, 1].
        b: the reference images, same shape.

    Returns:
        `float`: the mean SSIM over the batch (1 for identical images).

    Raises:
        `ValueError`: when the shapes differ or the batch is empty.
    """
    from skimage.metrics import structural_similarity

    a, b = _as_float_images(a), _as_float_images(b)
    if a.shape != b.shape or a.ndim not in (3, 4) or len(a) == 0:
        raise ValueError(f"ssim needs two non-empty batches of the same shape, got {a.shape} and {b.shape}.")
    channel_axis = -1 if a.ndim == 4 else None
    return float(
        np.mean([structural_similarity(x, y, data_range=1.0, channel_axis=channel_axis) for x, y in zip(a, b)])
    )


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The Frechet distance between Gaussians fitted to two feature sets (the FID formula, on any features, e.g.
    `Judge.features`).

    Args:
        features_a (`np.ndarray`): `[N, D]`.
        features_b (`np.ndarray`): `[M, D]`.

    Returns:
        `float`: `|mu_a - mu_b|^2 + tr(S_a + S_b - 2 sqrt(S_a S_b))`, 0 for identical sets.

    Raises:
        `ValueError`: for mismatched dimensions or fewer than two samples in a set.
    """
    from scipy import linalg

    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(
            f"frechet_distance needs [N, D] and [M, D] features with N, M >= 2; got {a.shape}, {b.shape}."
        )
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b).real
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2.0 * covmean))
    return max(value, 0.0)
