"""From a prompt's similarity map on the feature grid to a heat map on the image, and boxes from heat maps.

As AFLoc does: Gaussian blur on the grid (sigma in grid cells), bilinear upsampling to the padded input,
crop to the image and resize to the original image size, a NaN border (BORDER_FRACTION, emulating a
centre crop), and min-max normalisation of the valid pixels to [-1, 1]. Boxes come from the connected
components of the normalised map above a threshold, scored by the raw map, so the COCO evaluator can
score a map-based head too. Optional bimodal bias merging (Generate to Ground) runs on the grid first.
"""
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import torch
from detectron2.structures import Boxes, Instances
from scipy import ndimage
from torch.nn import functional as F

from ..postprocessing import BOX_SCORE_FUNCTIONS, MERGE_MODES, bimodal_bias_merging, heatmap_to_boxes, normalize_map


@dataclass(frozen=True)
class MapSettings:
    """How grid maps become heat maps and boxes (cfg.MODEL.LOCALIZATION_MAPS)."""

    blur_sigma: float = 1.5
    border_fraction: float = 0.0
    box_threshold: float = 0.3
    box_score: str = "mean"
    max_boxes_per_prompt: int = 3
    bbm_enabled: bool = False
    bbm_mode: str = "bezier"

    def __post_init__(self):
        if self.blur_sigma < 0:
            raise ValueError(f"MODEL.LOCALIZATION_MAPS.BLUR_SIGMA must be >= 0, got {self.blur_sigma}")
        if not 0.0 <= self.border_fraction < 0.5:
            raise ValueError(f"MODEL.LOCALIZATION_MAPS.BORDER_FRACTION must be in [0, 0.5), got {self.border_fraction}")
        if self.box_score not in BOX_SCORE_FUNCTIONS:
            raise ValueError(f"MODEL.LOCALIZATION_MAPS.BOX_SCORE must be one of {sorted(BOX_SCORE_FUNCTIONS)}, "
                             f"got {self.box_score!r}")
        if self.max_boxes_per_prompt < 1:
            raise ValueError(f"MODEL.LOCALIZATION_MAPS.MAX_BOXES_PER_PROMPT must be >= 1, got {self.max_boxes_per_prompt}")
        if self.bbm_mode not in MERGE_MODES:
            raise ValueError(f"MODEL.LOCALIZATION_MAPS.BBM.MODE must be one of {sorted(MERGE_MODES)}, got {self.bbm_mode!r}")

    @classmethod
    def from_config(cls, cfg) -> "MapSettings":
        section = cfg.MODEL.LOCALIZATION_MAPS
        return cls(
            blur_sigma=float(section.BLUR_SIGMA),
            border_fraction=float(section.BORDER_FRACTION),
            box_threshold=float(section.BOX_THRESHOLD),
            box_score=section.BOX_SCORE,
            max_boxes_per_prompt=int(section.MAX_BOXES_PER_PROMPT),
            bbm_enabled=bool(section.BBM.ENABLED),
            bbm_mode=section.BBM.MODE,
        )


def blur_grid_maps(grid_maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """[P, h, w] maps each blurred by a Gaussian of `sigma` grid cells (scipy, borders reflected), on CPU."""
    maps = grid_maps.detach().float().cpu()
    if sigma == 0:
        return maps
    return torch.from_numpy(ndimage.gaussian_filter(maps.numpy(), sigma=(0, sigma, sigma), mode="reflect"))


def _nan_border(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """`maps` [P, H, W] with `fraction` of each side set to NaN."""
    height, width = maps.shape[-2:]
    rows, cols = int(round(fraction * height)), int(round(fraction * width))
    if rows:
        maps[:, :rows], maps[:, height - rows:] = float("nan"), float("nan")
    if cols:
        maps[:, :, :cols], maps[:, :, width - cols:] = float("nan"), float("nan")
    return maps


def grid_to_heatmaps(grid_maps: torch.Tensor, image_size: Tuple[int, int], padded_size: Tuple[int, int],
                     output_size: Tuple[int, int], settings: MapSettings) -> torch.Tensor:
    """Raw heat maps [P, H, W] (float32, CPU, NaN border) on the original image of `output_size` (H, W).

    `grid_maps` [P, h, w] cover the padded input tensor of `padded_size`; the resized image occupies its
    top-left `image_size`. Blur on the grid, upsample to the padded input, crop, resize to the output.
    """
    blurred = blur_grid_maps(grid_maps, settings.blur_sigma)
    upsampled = F.interpolate(blurred[None], size=tuple(padded_size), mode="bilinear", align_corners=False)[0]
    cropped = upsampled[:, : image_size[0], : image_size[1]]
    if tuple(cropped.shape[-2:]) != tuple(output_size):
        cropped = F.interpolate(cropped[None], size=tuple(output_size), mode="bilinear", align_corners=False)[0]
    return _nan_border(cropped.contiguous(), settings.border_fraction)


def normalized_heatmaps(raw_maps: torch.Tensor) -> torch.Tensor:
    """Each map min-max normalised over its valid pixels to [-1, 1] (`normalize_map`); NaN stays NaN."""
    return torch.stack([torch.from_numpy(normalize_map(m).astype(np.float32)) for m in raw_maps.cpu()])


def heatmap_instances(raw_maps: torch.Tensor, class_ids: Sequence[int], settings: MapSettings) -> Instances:
    """Instances on the maps' image: for each prompt, the boxes of the components of its normalised map
    above BOX_THRESHOLD (at most MAX_BOXES_PER_PROMPT, best first), scored by the raw map inside them,
    with the prompt's class id. Prompts with a negative class id give no boxes."""
    boxes, scores, classes = [], [], []
    for raw, class_id in zip(raw_maps, class_ids):
        if class_id < 0:
            continue
        prompt_boxes, prompt_scores = heatmap_to_boxes(raw, settings.box_threshold, settings.box_score)
        keep = np.isfinite(prompt_scores)
        prompt_boxes, prompt_scores = prompt_boxes[keep], prompt_scores[keep]
        count = min(len(prompt_boxes), settings.max_boxes_per_prompt)
        boxes.append(prompt_boxes[:count])
        scores.append(prompt_scores[:count])
        classes.append(np.full(count, class_id, dtype=np.int64))
    instances = Instances(tuple(raw_maps.shape[-2:]))
    instances.pred_boxes = Boxes(torch.from_numpy(np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)))
    instances.scores = torch.from_numpy(np.concatenate(scores) if scores else np.zeros(0, np.float32))
    instances.pred_classes = torch.from_numpy(np.concatenate(classes) if classes else np.zeros(0, np.int64))
    return instances


def _square(maps: torch.Tensor, side: int) -> torch.Tensor:
    """[P, h, w] maps resized to [P, side, side] (unchanged when already that size)."""
    if tuple(maps.shape[-2:]) == (side, side):
        return maps
    return F.interpolate(maps[None], size=(side, side), mode="bilinear", align_corners=False)[0]


def bias_merged_grid_maps(activation: torch.Tensor, image_bias: torch.Tensor, text_bias: torch.Tensor,
                          mode: str = "bezier") -> torch.Tensor:
    """BBM of each prompt map on the grid: `activation` [P, h, w], one `image_bias` [h, w] for the image,
    a `text_bias` [P, h, w] per prompt. BBM's matrix product needs square maps, so non-square grids are
    resized to max(h, w) a side and back. Returns [P, h, w] float32 on CPU."""
    height, width = activation.shape[-2:]
    side = max(height, width)
    maps = _square(activation.detach().float().cpu(), side)
    image = _square(image_bias.detach().float().cpu()[None], side)[0]
    texts = _square(text_bias.detach().float().cpu(), side)
    merged = torch.stack([
        torch.as_tensor(bimodal_bias_merging(a, image, t, mode=mode), dtype=torch.float32)
        for a, t in zip(maps, texts)
    ])
    if (height, width) != (side, side):
        merged = F.interpolate(merged[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return merged
