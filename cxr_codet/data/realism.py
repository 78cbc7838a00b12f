"""How close a detection dataset's images are to another's: intensity distribution, lesion contrast and box sizes.

Used to compare the synthetic cxr_phantom with real radiographs (tools/phantom_realism.py). Every statistic is
scale-free (intensities in [0, 1], box sizes as fractions of the image side), so 256 px phantoms and 512 px NIH
images compare directly.
"""
from typing import Dict, Iterable, Sequence

import numpy as np

from .image_io import read_gray

RING_FRACTION = 0.5  # the background ring around a box extends this fraction of the box's size on every side
PERCENTILES = (5, 25, 50, 75, 95)


def lesion_contrast(image: np.ndarray, box_xywh: Sequence[float]) -> float:
    """Contrast-to-noise ratio of a box: (mean inside - mean of the surrounding ring) / std of the ring, the ring
    being the box grown by RING_FRACTION of its width/height on each side (clipped to the image) minus the box.
    NaN when the ring is empty or flat."""
    height, width = image.shape[:2]
    x, y, w, h = (float(v) for v in box_xywh)
    x0, y0, x1, y1 = (int(round(v)) for v in (x, y, x + w, y + h))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return float("nan")
    gx, gy = int(round(RING_FRACTION * w)), int(round(RING_FRACTION * h))
    rx0, ry0, rx1, ry1 = max(x0 - gx, 0), max(y0 - gy, 0), min(x1 + gx, width), min(y1 + gy, height)
    ring = np.ones((ry1 - ry0, rx1 - rx0), dtype=bool)
    ring[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0] = False
    values = image[ry0:ry1, rx0:rx1].astype(np.float64)[ring]
    if values.size < 2 or values.std() == 0:
        return float("nan")
    return float((image[y0:y1, x0:x1].astype(np.float64).mean() - values.mean()) / values.std())


def _percentiles(values: Iterable[float], prefix: str) -> Dict[str, float]:
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if values.size == 0:
        return {}
    return {f"{prefix}_p{p}": float(np.percentile(values, p)) for p in PERCENTILES}


def dataset_realism(records: Iterable[dict], read_image=None, pixels_per_image: int = 4096, seed: int = 0) -> Dict:
    """Statistics of detection records (detectron2 dicts with file_name and XYWH_ABS annotations):
    `intensity_*` percentiles of pixel values / 255 (a random sample of `pixels_per_image` per image),
    `image_std_*` of each image's own standard deviation / 255, `contrast_*` of lesion_contrast per box,
    `box_side_*` of sqrt(w h) / sqrt(W H), `aspect_*` of w / h, and counts."""
    read_image = read_image or read_gray
    rng = np.random.default_rng(seed)
    samples, image_stds, contrasts, sides, aspects = [], [], [], [], []
    boxes = images = 0
    for record in records:
        images += 1
        image = read_image(record["file_name"])
        flat = image.reshape(-1)
        samples.append(flat[rng.integers(0, flat.size, pixels_per_image)] / 255.0)
        image_stds.append(flat.std() / 255.0)
        scale = np.sqrt(image.shape[0] * image.shape[1])
        for ann in record.get("annotations", []):
            x, y, w, h = ann["bbox"]
            boxes += 1
            contrasts.append(lesion_contrast(image, ann["bbox"]))
            sides.append(np.sqrt(max(w, 0) * max(h, 0)) / scale)
            aspects.append(w / h if h > 0 else float("nan"))
    result = {"images": images, "boxes": boxes}
    result.update(_percentiles(np.concatenate(samples) if samples else [], "intensity"))
    result.update(_percentiles(image_stds, "image_std"))
    result.update(_percentiles(contrasts, "contrast"))
    result.update(_percentiles(sides, "box_side"))
    result.update(_percentiles(aspects, "aspect"))
    return result


def realism_table(results: Dict[str, Dict]) -> str:
    """A markdown table: one row per statistic, one column per dataset."""
    names = list(results)
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    lines = ["| statistic | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for key in keys:
        cells = [results[n].get(key) for n in names]
        lines.append(f"| {key} | " + " | ".join("-" if c is None else f"{c:.3g}" for c in cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    """tools/phantom_realism.py: the statistics of registered datasets, side by side (markdown, optional JSON)."""
    import argparse
    import json

    from detectron2.data import DatasetCatalog
    from tqdm import tqdm

    from ..numeric_args import number_problem, refuse
    from .datasets import builtin  # importing it registers the built-in datasets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=f"datasets are read under {builtin.datasets_root()}")
    parser.add_argument("--datasets", nargs="+", default=["cxr_phantom_val", "nih_cxr14_bbox_all"])
    parser.add_argument("--max-images", type=int, default=200, help="first N images of each dataset (0: all)")
    parser.add_argument("--output", help="also write the statistics as JSON here")
    args = parser.parse_args(argv)
    refuse("phantom_realism.py", [number_problem("--max-images", args.max_images, low=0)])
    results = {}
    for name in args.datasets:
        records = DatasetCatalog.get(name)
        records = records[: args.max_images] if args.max_images else records
        results[name] = dataset_realism(tqdm(records, desc=name, unit="image"))  # the bar follows the reading
    print(realism_table(results))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=1)
