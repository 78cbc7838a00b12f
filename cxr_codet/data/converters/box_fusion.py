"""Turn several radiologists' boxes into training boxes: keep all, Weighted Boxes Fusion, or k-reader agreement.

Every strategy takes and returns one table of boxes (image_id, category_id, x_min, y_min, x_max, y_max);
the output also says, per box, how many distinct readers drew a box of the same finding overlapping it
(IoU >= the threshold), which is what "agreement" filters on.
"""
from typing import Callable, Dict

import numpy as np
import pandas as pd
from ensemble_boxes import weighted_boxes_fusion

BOX_COLUMNS = ["x_min", "y_min", "x_max", "y_max"]
DEFAULT_IOU_THRESHOLD = 0.4  # the usual VinDr-CXR choice (the Kaggle metric's IoU)
DEFAULT_MIN_READERS = 2


def keep_all_boxes(boxes: pd.DataFrame, iou_threshold: float, min_readers: int) -> pd.DataFrame:
    """Every reader's box, unchanged (the research code's behaviour: duplicates of one lesion stay)."""
    return boxes[["image_id", "category_id", "rad_id"] + BOX_COLUMNS].reset_index(drop=True)


def fuse_boxes_wbf(boxes: pd.DataFrame, iou_threshold: float, min_readers: int) -> pd.DataFrame:
    """Weighted Boxes Fusion per image and finding, each reader one "model" (ensemble-boxes package)."""
    boxes = boxes.sort_values(["image_id", "rad_id"], kind="stable")
    image_ids = boxes["image_id"].to_numpy()
    coords = boxes[BOX_COLUMNS].to_numpy(np.float64)
    labels = boxes["category_id"].to_numpy()
    readers = boxes["rad_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, image_ids[1:] != image_ids[:-1]])
    ends = np.r_[starts[1:], len(image_ids)]
    fused_ids, fused_boxes, fused_labels = [], [], []
    for start, end in zip(starts, ends):
        image_boxes = coords[start:end]
        scale = image_boxes[:, 2:].max(axis=0)  # IoU and averages are invariant to per-axis scaling
        normalised = image_boxes / np.r_[scale, scale]
        boxes_list, scores_list, labels_list = [], [], []
        for reader in pd.unique(readers[start:end]):
            mine = readers[start:end] == reader
            boxes_list.append(normalised[mine])
            scores_list.append(np.ones(mine.sum()))
            labels_list.append(labels[start:end][mine])
        out_boxes, _, out_labels = weighted_boxes_fusion(
            boxes_list, scores_list, labels_list, iou_thr=iou_threshold, skip_box_thr=0.0
        )
        fused_boxes.append(out_boxes * np.r_[scale, scale])
        fused_labels.append(out_labels)
        fused_ids.extend([image_ids[start]] * len(out_boxes))
    if not fused_ids:
        return pd.DataFrame({"image_id": [], "category_id": [], **{c: [] for c in BOX_COLUMNS}})
    fused = pd.DataFrame(np.concatenate(fused_boxes), columns=BOX_COLUMNS)
    fused.insert(0, "category_id", np.concatenate(fused_labels).astype(np.int64))
    fused.insert(0, "image_id", fused_ids)
    return fused


def keep_agreed_boxes(boxes: pd.DataFrame, iou_threshold: float, min_readers: int) -> pd.DataFrame:
    """WBF boxes that at least `min_readers` distinct readers agree on (same finding, IoU >= threshold)."""
    fused = fuse_boxes_wbf(boxes, iou_threshold, min_readers)
    support = reader_support(fused, boxes, iou_threshold)
    return fused[support >= min_readers].reset_index(drop=True)


FUSION_STRATEGIES: Dict[str, Callable[[pd.DataFrame, float, int], pd.DataFrame]] = {
    "keep_all": keep_all_boxes,
    "wbf": fuse_boxes_wbf,
    "agreement": keep_agreed_boxes,
}


def fuse_reader_boxes(
    boxes: pd.DataFrame,
    strategy: str = "wbf",
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    min_readers: int = DEFAULT_MIN_READERS,
) -> pd.DataFrame:
    """Apply one of FUSION_STRATEGIES to reader boxes; adds a "readers" column (distinct agreeing readers)."""
    if strategy not in FUSION_STRATEGIES:
        raise ValueError(f"unknown box fusion strategy {strategy!r}; choose one of {sorted(FUSION_STRATEGIES)}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"IoU threshold must be in (0, 1], got {iou_threshold}")
    if min_readers < 1:
        raise ValueError(f"min_readers must be at least 1, got {min_readers}")
    out = FUSION_STRATEGIES[strategy](boxes, iou_threshold, min_readers).reset_index(drop=True)
    return out.assign(readers=reader_support(out, boxes, iou_threshold))


def reader_support(out: pd.DataFrame, readers: pd.DataFrame, iou_threshold: float) -> np.ndarray:
    """For each box of `out`: distinct readers with a box of the same finding and image at IoU >= threshold."""
    if len(out) == 0:
        return np.zeros(0, np.int64)
    left = out[["image_id", "category_id"] + BOX_COLUMNS].reset_index(drop=True).reset_index()
    right = readers[["image_id", "category_id", "rad_id"] + BOX_COLUMNS]
    pairs = left.merge(right, on=["image_id", "category_id"], suffixes=("", "_reader"))
    iou = box_iou_pairs(pairs[BOX_COLUMNS].to_numpy(), pairs[[c + "_reader" for c in BOX_COLUMNS]].to_numpy())
    agreeing = pairs[iou >= iou_threshold - 1e-9]
    counts = agreeing.groupby("index")["rad_id"].nunique()
    return counts.reindex(range(len(out)), fill_value=0).to_numpy(np.int64)


def box_iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of a[i] and b[i] for XYXY boxes (row-wise, not all pairs)."""
    width = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    height = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = width * height
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
