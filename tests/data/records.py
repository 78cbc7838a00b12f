"""Dataset records for the data-layer tests: records with boxes per finding, as samplers and the weak-label split
read them (no image files: they never read one)."""
import numpy as np


def make_record(index, labels, width=100, height=120):
    """A dataset dict with one box per finding in `labels` (no image file: the sampler never reads one)."""
    return {
        "file_name": f"img{index}.png",
        "image_id": index,
        "width": width,
        "height": height,
        "image_labels": sorted(labels),
        "annotations": [
            {"bbox": [1, 1, 10, 10], "bbox_mode": 0, "category_id": c} for c in sorted(labels)
        ],
    }


def records_with_findings(num_with_findings=40, num_normal=10):
    """Dicts with one or two findings (one box each, and a caption), then `num_normal` No-finding images."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(num_with_findings + num_normal):
        labels = sorted(set(rng.choice(5, size=rng.integers(1, 3)).tolist())) if i < num_with_findings else []
        records.append({
            "file_name": f"img{i}.png", "image_id": i, "width": 100, "height": 120, "caption": f"caption {i}",
            "image_labels": labels,
            "annotations": [{"bbox": [1, 1, 10, 10], "bbox_mode": 0, "category_id": c} for c in labels],
        })
    return records
