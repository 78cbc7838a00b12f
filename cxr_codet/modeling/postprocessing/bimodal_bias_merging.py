"""Bimodal bias merging (BBM) from "Generate to Ground" (MIDL 2025) and a Gaussian-mixture map threshold.

BBM corrects an activation map A with an image-bias map I and a text-bias map T:
  M = minmax(I @ T)                              (matrix product of the maps, normalised to [0, 1])
  s = clip(SSIM(I, T), 0, 1)                     (confidence that the two biases agree)
  P = (M + A + M * A) / 2                        (control point, elementwise product)
  out = (1-s)^2 A + 2 s (1-s) P + s^2 M          (quadratic Bezier; "linear": (1-s) A + s M)
with A min-max normalised to [0, 1] first, so s = 0 gives A and s = 1 gives M; in between the output may
exceed 1 (P reaches 1.5), and is left unnormalised. Every function takes numpy arrays or torch tensors
and returns the kind (and torch device and floating dtype) of its first map argument; the arithmetic runs
in float64 numpy on the CPU.
"""
import math
from typing import Callable, Dict

import numpy as np
import torch
from scipy import ndimage
from sklearn.mixture import GaussianMixture

__all__ = [
    "MERGE_MODES",
    "bezier_blend",
    "bezier_control_point",
    "bias_confidence",
    "bimodal_bias_merging",
    "gmm_threshold",
    "gmm_threshold_mask",
    "linear_blend",
    "merge_biases",
    "minmax_normalize",
    "ssim",
]


def _to_numpy(x, name: str) -> np.ndarray:
    """`x` (numpy array, torch tensor or nested sequence) as a 2-D float64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D map (H, W); got shape {array.shape}")
    return array


def _like(array: np.ndarray, reference):
    """`array` returned as the same kind as `reference`: a torch tensor on its device, else numpy."""
    if not isinstance(reference, torch.Tensor):
        return array
    dtype = reference.dtype if array.dtype != bool and reference.is_floating_point() else None
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=reference.device, dtype=dtype)


def _check_confidence(s: float) -> float:
    """`s` as a float, with a clear error outside [0, 1]."""
    s = float(s)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"confidence s must be in [0, 1]; got {s}")
    return s


def _minmax(array: np.ndarray) -> np.ndarray:
    """Min-max normalisation of the finite entries to [0, 1]; a constant map becomes zeros."""
    finite = array[np.isfinite(array)]
    if not finite.size:
        return array.copy()
    low, high = finite.min(), finite.max()
    if high == low:
        return np.where(np.isfinite(array), 0.0, np.nan)
    return (array - low) / (high - low)


def minmax_normalize(heatmap):
    """`heatmap` min-max normalised to [0, 1] over its finite entries (NaN kept; constant map -> zeros)."""
    return _like(_minmax(_to_numpy(heatmap, "heatmap")), heatmap)


def ssim(x, y, sigma: float = 1.5, truncate: float = 3.5, k1: float = 0.01, k2: float = 0.03,
         data_range: float = None) -> float:
    """Mean structural similarity of two maps (Wang et al. 2004) with a Gaussian window.

    Local weighted means, variances and covariance come from a Gaussian filter (sigma 1.5, truncated at
    3.5 sigma: an 11 x 11 window; borders reflected, no cropping, population moments). SSIM map =
    (2 mu_x mu_y + C1)(2 cov_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(var_x + var_y + C2)) with
    C1 = (k1 L)^2, C2 = (k2 L)^2 and L the data range: by default max - min over both inputs together.
    Returns the mean of the SSIM map (1.0 when both maps are the same constant, so L = 0).
    """
    a, b = _to_numpy(x, "x"), _to_numpy(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs maps of one shape; got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("SSIM inputs must be finite (no NaN or infinite values)")
    if data_range is None:
        data_range = max(a.max(), b.max()) - min(a.min(), b.min())
    if data_range == 0:
        return 1.0
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2

    def local_mean(values):
        return ndimage.gaussian_filter(values, sigma=sigma, truncate=truncate, mode="reflect")

    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mu_a * mu_a
    var_b = local_mean(b * b) - mu_b * mu_b
    cov = local_mean(a * b) - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    ssim_map = numerator / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def merge_biases(image_bias, text_bias):
    """Merged bias M = minmax(I @ T): the matrix product of the image- and text-bias maps in [0, 1]."""
    i_map, t_map = _to_numpy(image_bias, "image_bias"), _to_numpy(text_bias, "text_bias")
    if i_map.shape[1] != t_map.shape[0]:
        raise ValueError(f"I @ T needs I's width to equal T's height; got I {i_map.shape}, T {t_map.shape}")
    return _like(_minmax(i_map @ t_map), image_bias)


def bias_confidence(image_bias, text_bias) -> float:
    """BBM confidence s = SSIM(I, T) clipped to [0, 1] (see `ssim` for the SSIM definition)."""
    return float(np.clip(ssim(image_bias, text_bias), 0.0, 1.0))


def _control_point(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """P = (M + A + M * A) / 2 on numpy arrays."""
    return (m + a + m * a) / 2.0


def bezier_control_point(activation, merged):
    """Control point P = (M + A + M * A) / 2 (elementwise) of the quadratic Bezier between A and M."""
    a, m = _to_numpy(activation, "activation"), _to_numpy(merged, "merged")
    return _like(_control_point(a, m), activation)


def bezier_blend(activation, merged, s: float):
    """Quadratic Bezier (1-s)^2 A + 2 s (1-s) P + s^2 M, P = `bezier_control_point(A, M)`; unnormalised."""
    s = _check_confidence(s)
    a, m = _to_numpy(activation, "activation"), _to_numpy(merged, "merged")
    return _like((1 - s) ** 2 * a + 2 * s * (1 - s) * _control_point(a, m) + s ** 2 * m, activation)


def linear_blend(activation, merged, s: float):
    """Linear interpolation (1-s) A + s M (BBM's simpler ablation); no normalisation."""
    s = _check_confidence(s)
    a, m = _to_numpy(activation, "activation"), _to_numpy(merged, "merged")
    return _like((1 - s) * a + s * m, activation)


# How the normalised activation map A and the merged bias M are combined at confidence s.
MERGE_MODES: Dict[str, Callable] = {"bezier": bezier_blend, "linear": linear_blend}


def bimodal_bias_merging(activation, image_bias, text_bias, mode: str = "bezier"):
    """BBM output map: A = minmax(activation), M = `merge_biases(I, T)`, s = `bias_confidence(I, T)`,
    combined by `MERGE_MODES[mode]` ("bezier" or "linear"). Returns the kind of `activation`.
    """
    if mode not in MERGE_MODES:
        raise ValueError(f"unknown BBM mode {mode!r}; choose one of {sorted(MERGE_MODES)}")
    a = _minmax(_to_numpy(activation, "activation"))
    m = _to_numpy(merge_biases(image_bias, text_bias), "merged bias")
    if m.shape != a.shape:
        raise ValueError(f"merged bias I @ T has shape {m.shape}, activation has {a.shape}; they must match")
    return _like(MERGE_MODES[mode](a, m, bias_confidence(image_bias, text_bias)), activation)


def gmm_threshold(heatmap, seed: int = 0) -> float:
    """Threshold between the two modes of a map: the mean of the two means of a 2-component Gaussian
    mixture (sklearn, `random_state=seed`) fitted to the finite pixel values.

    A map with fewer than two distinct finite values returns that value (so `map > threshold` is empty).
    """
    values = _to_numpy(heatmap, "heatmap")
    values = values[np.isfinite(values)]
    if not values.size:
        raise ValueError("gmm_threshold needs a map with at least one finite value")
    if np.unique(values).size < 2:
        return float(values[0])
    mixture = GaussianMixture(n_components=2, random_state=seed).fit(values.reshape(-1, 1))
    return float(np.mean(mixture.means_))


def gmm_threshold_mask(heatmap, seed: int = 0, smooth: bool = True):
    """Binary mask `map > gmm_threshold(map)` (NaN pixels never set), then, when `smooth`, a 3 x 3 mean
    filter (borders reflected) re-binarised at 0.5, which removes isolated pixels and box corners.
    Returns a bool numpy array, or a bool tensor for a tensor input.
    """
    values = _to_numpy(heatmap, "heatmap")
    valid = np.isfinite(values)
    mask = valid & (np.where(valid, values, -math.inf) > gmm_threshold(values, seed))
    if smooth:
        mask = valid & (ndimage.uniform_filter(mask.astype(np.float64), size=3, mode="reflect") > 0.5)
    return _like(mask, heatmap)
