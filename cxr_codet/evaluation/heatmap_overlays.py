"""Heat-map overlays: a prompt's map blended over the image in colour, with the ground-truth boxes drawn.

Map values are min-max scaled over the valid (finite) pixels and coloured with OpenCV's JET colormap
(blue low, red high); invalid (NaN) pixels show the plain image. Boxes are drawn in green.
"""
import os
from typing import Optional, Sequence

import cv2
import numpy as np

BOX_COLOR = (0, 255, 0)  # BGR green
TEXT_COLOR = (255, 255, 255)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 BGR copy of a grayscale (H x W or H x W x 1) or 3-channel image."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image.astype(np.uint8), cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H x W (grayscale) or H x W x 3; got shape {image.shape}")
    return image.astype(np.uint8).copy()


def heatmap_overlay(image: np.ndarray, heatmap, boxes: Sequence[Sequence[float]] = (), alpha: float = 0.45,
                    title: Optional[str] = None) -> np.ndarray:
    """uint8 BGR overlay of `heatmap` (H x W, NaN = invalid; a torch tensor is fine) on `image` (same H x W)
    with `boxes` (xyxy pixels) drawn and an optional `title` written in the top-left corner."""
    if hasattr(heatmap, "detach"):
        heatmap = heatmap.detach().cpu().numpy()
    values = np.asarray(heatmap, dtype=np.float64)
    canvas = _as_bgr(image)
    if values.shape != canvas.shape[:2]:
        raise ValueError(f"heat map has shape {values.shape}, image has {canvas.shape[:2]}; they must match")
    valid = np.isfinite(values)
    if valid.any():
        low, high = values[valid].min(), values[valid].max()
        scaled = np.where(valid, (values - low) / (high - low) if high > low else 0.0, 0.0)
        colours = cv2.applyColorMap(np.round(scaled * 255).astype(np.uint8), cv2.COLORMAP_JET)
        blended = cv2.addWeighted(canvas, 1.0 - alpha, colours, alpha, 0.0)
        canvas[valid] = blended[valid]
    thickness = max(1, int(round(min(canvas.shape[:2]) / 256)))
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        cv2.rectangle(canvas, (int(round(x0)), int(round(y0))), (int(round(x1)) - 1, int(round(y1)) - 1),
                      BOX_COLOR, thickness)
    if title:
        scale = max(0.3, min(canvas.shape[:2]) / 700)
        cv2.putText(canvas, title, (4, int(18 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOR,
                    max(1, thickness), cv2.LINE_AA)
    return canvas


def save_heatmap_overlay(path: str, image: np.ndarray, heatmap, boxes: Sequence[Sequence[float]] = (),
                         title: Optional[str] = None) -> str:
    """Write `heatmap_overlay(...)` as a PNG at `path` (folders created); returns `path`."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    if not cv2.imwrite(path, heatmap_overlay(image, heatmap, boxes, title=title)):
        raise OSError(f"could not write heat-map overlay {path}")
    return path
