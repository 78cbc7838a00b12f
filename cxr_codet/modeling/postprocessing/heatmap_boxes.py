"""Heat map to boxes, shared by the map heads at inference and the localization evaluators: a map as a 2-D
array, min-max normalisation to [-1, 1], the threshold, and each connected component as a scored box.

Non-finite entries (NaN borders, padding) are invalid pixels: never normalised, never part of a box. Boxes are
float `xyxy` in the map's pixel coordinates, pixel (row r, column c) covering [c, c+1) x [r, r+1).
"""
import math
from typing import Callable, Dict, Tuple

import numpy as np
from scipy import ndimage

__all__ = ["BOX_SCORE_FUNCTIONS", "as_map", "heatmap_to_boxes", "mask_to_boxes", "normalize_map"]

# How a connected component's score is computed from the map values inside it.
BOX_SCORE_FUNCTIONS: Dict[str, Callable[[np.ndarray], float]] = {
    "mean": lambda values: float(np.mean(values)),
    "max": lambda values: float(np.max(values)),
}


def as_map(heatmap, name: str = "heatmap") -> np.ndarray:
    """`heatmap` as a 2-D float64 numpy array (torch tensors detached and copied to the CPU)."""
    if hasattr(heatmap, "detach"):
        heatmap = heatmap.detach().cpu().numpy()
    array = np.asarray(heatmap, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D map (H, W); got shape {array.shape}")
    return array


def normalize_map(heatmap) -> np.ndarray:
    """Min-max normalise the finite entries of `heatmap` to [-1, 1] (as AFLoc does); NaN stays NaN.

    A map whose finite entries are all equal carries no localisation: it becomes all zeros (so no mask
    at a positive threshold). A map with no finite entry is returned as all NaN.
    """
    array = as_map(heatmap)
    valid = np.isfinite(array)
    out = np.full(array.shape, np.nan)
    if not valid.any():
        return out
    low, high = array[valid].min(), array[valid].max()
    out[valid] = 0.0 if high == low else 2.0 * (array[valid] - low) / (high - low) - 1.0
    return out


def mask_to_boxes(mask, heatmap=None, score: str = "mean",
                  connectivity: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Boxes (K x 4 float32 xyxy) of the connected components of `mask` and a score per box.

    Components come from `scipy.ndimage.label` (connectivity 1: 4-neighbours, 2: 8-neighbours); a box
    spans its component's pixels edge to edge ([c_min, r_min, c_max + 1, r_max + 1]), so `boxes_to_mask`
    gives back each component's bounding rectangle. The score is `score` ("mean" or "max", see
    `BOX_SCORE_FUNCTIONS`) of `heatmap`'s finite values in the component (1.0 without a heat map).
    Boxes come sorted by descending score.
    """
    if score not in BOX_SCORE_FUNCTIONS:
        raise ValueError(f"unknown box score {score!r}; choose one of {sorted(BOX_SCORE_FUNCTIONS)}")
    mask_array = np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask).astype(bool)
    if mask_array.ndim != 2:
        raise ValueError(f"mask must be a 2-D mask (H, W); got shape {mask_array.shape}")
    values = None if heatmap is None else as_map(heatmap)
    if values is not None and values.shape != mask_array.shape:
        raise ValueError(f"heatmap has shape {values.shape}, expected the mask's shape {mask_array.shape}")
    labels, count = ndimage.label(mask_array, structure=ndimage.generate_binary_structure(2, connectivity))
    boxes, scores = [], []
    for label, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
        boxes.append([cols.start, rows.start, cols.stop, rows.stop])
        inside = values[labels == label] if values is not None else np.ones(1)
        inside = inside[np.isfinite(inside)]
        scores.append(BOX_SCORE_FUNCTIONS[score](inside) if len(inside) else math.nan)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return (np.asarray(boxes, dtype=np.float32).reshape(-1, 4)[order],
            np.asarray(scores, dtype=np.float32)[order])


def heatmap_to_boxes(heatmap, threshold: float = 0.3, score: str = "mean",
                     connectivity: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Boxes and scores from a heat map, so map-based heads can be scored with the COCO evaluator.

    The map is normalised to [-1, 1] (`normalize_map`), thresholded at `normalized > threshold`, and
    each connected component becomes a box scored with `score` of the *raw* map inside it (see
    `mask_to_boxes`).
    """
    array = as_map(heatmap)
    mask = np.nan_to_num(normalize_map(array), nan=-np.inf) > threshold
    return mask_to_boxes(mask, array, score=score, connectivity=connectivity)
