"""What the demo writes per image: an overlay PNG (boxes, finding, score) and a JSON of its detections.

Detections are reported on the input file's own pixel grid (for a DICOM: Columns x Rows, whatever size it
was decoded at), as [x0, y0, x1, y1] absolute pixel coordinates; the overlay is drawn on the decoded image.
"""
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from detectron2.structures import Instances

from .inputs import InputImage

# BGR colours, cycled by class id.
_PALETTE = [(0, 200, 255), (60, 220, 60), (255, 120, 0), (200, 80, 255), (0, 80, 255), (255, 220, 0), (180, 180, 180)]


def detection_records(instances: Instances, class_names: Sequence[str]) -> List[Dict[str, object]]:
    """[{"finding", "class_id", "score", "box": [x0, y0, x1, y1]}] sorted by decreasing score."""
    boxes = instances.pred_boxes.tensor.numpy().tolist()
    scores = instances.scores.numpy().tolist()
    classes = instances.pred_classes.numpy().tolist()
    records = [
        {"finding": class_names[c], "class_id": int(c), "score": round(float(s), 4), "box": [round(v, 2) for v in b]}
        for b, s, c in zip(boxes, scores, classes)
    ]
    return sorted(records, key=lambda r: -r["score"])


def draw_overlay(image: InputImage, detections: List[Dict[str, object]]) -> np.ndarray:
    """The decoded image in BGR with each detection's box and "finding score" label."""
    canvas = cv2.cvtColor(image.pixels, cv2.COLOR_GRAY2BGR)
    scale_x = image.pixels.shape[1] / image.original_width
    scale_y = image.pixels.shape[0] / image.original_height
    side = max(canvas.shape[:2])
    thickness, font_scale = max(1, side // 400), max(0.3, side / 1600)
    for detection in reversed(detections):  # highest score drawn last, on top
        x0, y0, x1, y1 = detection["box"]
        p0 = (int(round(x0 * scale_x)), int(round(y0 * scale_y)))
        p1 = (int(round(x1 * scale_x)), int(round(y1 * scale_y)))
        colour = _PALETTE[detection["class_id"] % len(_PALETTE)]
        cv2.rectangle(canvas, p0, p1, colour, thickness)
        label = f"{detection['finding']} {detection['score']:.2f}"
        cv2.putText(canvas, label, (p0[0], max(p0[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour,
                    max(1, thickness // 2), cv2.LINE_AA)
    return canvas


def write_prediction(out_dir: Path, stem: str, image: InputImage, detections: List[Dict[str, object]],
                     vocabulary: Sequence[str], confidence_threshold: float) -> Dict[str, str]:
    """Write `<stem>.png` (overlay) and `<stem>.json` into `out_dir`; returns their paths."""
    overlay_path, json_path = out_dir / f"{stem}.png", out_dir / f"{stem}.json"
    if not cv2.imwrite(str(overlay_path), draw_overlay(image, detections)):
        raise OSError(f"could not write {overlay_path}")
    record = {
        "input": str(image.path),
        "kind": image.kind,
        "width": image.original_width,
        "height": image.original_height,
        "decoded_width": int(image.pixels.shape[1]),
        "decoded_height": int(image.pixels.shape[0]),
        "box_format": "x0 y0 x1 y1, absolute pixels of the input's own grid (width x height)",
        "vocabulary": list(vocabulary),
        "confidence_threshold": confidence_threshold,
        "detections": detections,
    }
    json_path.write_text(json.dumps(record, indent=1))
    return {"overlay": str(overlay_path), "json": str(json_path)}


def unique_stems(paths: Sequence[Path], reserved: Sequence[str] = ()) -> List[str]:
    """Output names for `paths`: the file stem, with the suffix and then a counter added where stems repeat
    (or equal a `reserved` name)."""
    stems, used = [], set(reserved)
    for path in paths:
        stem = path.stem
        if stem in used:
            stem = f"{path.stem}_{path.suffix.lstrip('.').lower()}" if path.suffix else path.stem
        base, counter = stem, 1
        while stem in used:
            counter += 1
            stem = f"{base}_{counter}"
        used.add(stem)
        stems.append(stem)
    return stems


def folder_problem(flag: str, folder: Optional[Path]) -> Optional[str]:
    """Why `folder` (the value of `flag`) cannot be used as an output folder, or None; nothing is created."""
    if folder is None:
        return None
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            return f"{flag} {folder} is a file, not a folder"
        return None if os.access(folder, os.W_OK | os.X_OK) else f"{flag} {folder} is not writable"
    parent = folder.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{flag} {folder} cannot be created: {parent} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{flag} {folder} cannot be created: {parent} is not writable"
    return None


def planned_outputs(output: Path, dicom_out: Optional[Path], inputs: Sequence[Path], stems: Sequence[str],
                    dicom_inputs: Sequence[bool], summary_name: str) -> List[Tuple[Path, str]]:
    """Every file the demo will write, with the flag of its folder: <stem>.png and .json per input and the summary
    under --output, <stem>.dcm per DICOM input under --dicom-out."""
    planned = [(output / f"{summary_name}.json", "--output")]
    for stem, is_dicom in zip(stems, dicom_inputs):
        planned += [(output / f"{stem}.png", "--output"), (output / f"{stem}.json", "--output")]
        if dicom_out is not None and is_dicom:
            planned.append((dicom_out / f"{stem}.dcm", "--dicom-out"))
    return planned


def overwritten_inputs(planned: Sequence[Tuple[Path, str]], inputs: Sequence[Path]) -> List[Tuple[Path, str]]:
    """(input, flag) for each input that a planned output is: the same path once symlinks are resolved, or the
    same file under another name (a hard link)."""
    by_path = {Path(p).resolve(): Path(p) for p in inputs}
    by_inode = {}
    for path in inputs:
        info = os.stat(path)
        by_inode[(info.st_dev, info.st_ino)] = Path(path)
    hit = []
    for path, flag in planned:
        target = Path(path).resolve()
        same = by_path.get(target)
        if same is None and target.exists():
            info = os.stat(target)
            same = by_inode.get((info.st_dev, info.st_ino))
        if same is not None:
            hit.append((same, flag))
    return hit
