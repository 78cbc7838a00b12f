"""`cxr_phantom`: a built-in synthetic CXR detection dataset, generated lazily on first use and then reused.

Each split is COCO JSON + 8-bit grayscale PNGs in `<root>/cxr_phantom/v<version>_n<images>_s<size>_seed<seed>/`
(`annotations.json`, `images/000000.png`, ...; `v<version>-<style>_...` for a style other than the default), so
splits with the same parameters share their files. Category
ids 0..13 follow VINDR_CXR_CLASSES; every image carries its captions at both granularities. A split is written
to a temporary folder and renamed into place under a file lock, so concurrent processes never see half a split.
The same parameters always give byte-identical files.
"""
import fcntl
import glob
import json
import logging
import os
import shutil
import time
import uuid
from typing import List, Optional, Tuple

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from tqdm import tqdm

from ..classes import VINDR_CXR_CLASSES
from ..descriptions import GRANULARITIES, compose_caption
from .coco_cxr import load_cxr_coco_json
from .phantom_render import DEFAULT_STYLE, phantom_style, render_phantom_image

logger = logging.getLogger(__name__)

# Bump when the renderer changes what it draws: old splits then live in other folders and are not reused.
PHANTOM_VERSION = 2
NORMAL_FRACTION = 0.2  # share of "No finding" images in every split

# name -> (num_images, image_size, seed, style); the nih_like splits draw the same findings as the default ones
BUILTIN_PHANTOM_SPLITS = {
    "cxr_phantom_train": (1000, 256, 0, DEFAULT_STYLE),
    "cxr_phantom_val": (200, 256, 1, DEFAULT_STYLE),
    # Held out: no setting was chosen on it, so it gives unbiased figures for settings picked on cxr_phantom_val.
    "cxr_phantom_test": (200, 256, 4, DEFAULT_STYLE),
    "cxr_phantom_tiny_train": (24, 128, 2, DEFAULT_STYLE),
    "cxr_phantom_tiny_val": (12, 128, 3, DEFAULT_STYLE),
    "cxr_phantom_nih_like_train": (1000, 256, 0, "nih_like"),
    "cxr_phantom_nih_like_val": (200, 256, 1, "nih_like"),
}


def phantom_split_plan(num_images: int, seed: int) -> List[Optional[int]]:
    """The main finding of every image (None: "No finding"): a NORMAL_FRACTION of normal images at random
    positions, the others cycling through shuffled rounds of all 14 findings so every finding is represented."""
    rng = np.random.default_rng([seed, num_images, 0x5EED])
    num_normal = int(round(NORMAL_FRACTION * num_images))
    normal = set(rng.permutation(num_images)[:num_normal].tolist())
    num_classes = len(VINDR_CXR_CLASSES)
    rounds = -(-(num_images - num_normal) // num_classes)
    cycle = iter(np.concatenate([rng.permutation(num_classes) for _ in range(rounds)]).tolist() if rounds else [])
    return [None if i in normal else next(cycle) for i in range(num_images)]


def phantom_dir(root: str, num_images: int, image_size: int, seed: int, style: str = DEFAULT_STYLE) -> str:
    """The folder of the split with these parameters."""
    version = f"v{PHANTOM_VERSION}" if style == DEFAULT_STYLE else f"v{PHANTOM_VERSION}-{style}"
    key = f"{version}_n{num_images}_s{image_size}_seed{seed}"
    return os.path.join(os.path.expanduser(root), "cxr_phantom", key)


def _image_entry(index: int, image_size: int, findings: List[str]) -> dict:
    return {
        "id": index + 1,
        "file_name": f"{index:06d}.png",
        "width": image_size,
        "height": image_size,
        "findings": findings,
        "caption": compose_caption(findings, "unelaborate", index),
        "captions": {g: compose_caption(findings, g, index) for g in GRANULARITIES},
    }


def write_cxr_phantom(out_dir: str, num_images: int, image_size: int, seed: int, style: str = DEFAULT_STYLE) -> None:
    """Render a split into `out_dir` (created): images/*.png and annotations.json."""
    if num_images < 1 or image_size < 64:
        raise ValueError(f"cxr_phantom needs num_images >= 1 and image_size >= 64, got {num_images}, {image_size}")
    phantom_style(style)  # an unknown style fails before anything is written
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir)
    images, annotations, unplaced = [], [], 0
    start = time.perf_counter()
    plan = phantom_split_plan(num_images, seed)
    for index, primary in enumerate(tqdm(plan, desc="cxr_phantom", leave=False, disable=None)):
        sample = render_phantom_image(image_size, seed, index, primary, style=style)
        unplaced += len(sample.unplaced)
        entry = _image_entry(index, image_size, sample.findings)
        if not cv2.imwrite(os.path.join(image_dir, entry["file_name"]), sample.image, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
            raise OSError(f"could not write {os.path.join(image_dir, entry['file_name'])}")
        images.append(entry)
        for category_id, box in sample.boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": entry["id"],
                    "category_id": category_id,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {
            "description": "cxr_phantom: synthetic chest radiographs with VinDr-CXR findings (cxr-codet)",
            "version": PHANTOM_VERSION,
            "num_images": num_images,
            "image_size": image_size,
            "seed": seed,
            **({} if style == DEFAULT_STYLE else {"style": style}),  # default splits stay byte-identical
        },
        "categories": [{"id": i, "name": name, "supercategory": "finding"} for i, name in enumerate(VINDR_CXR_CLASSES)],
        "images": images,
        "annotations": annotations,
    }
    with open(os.path.join(out_dir, "annotations.json"), "w", encoding="utf-8") as f:
        json.dump(coco, f, indent=1)
    logger.info(
        f"Generated cxr_phantom split {out_dir}: {num_images} images, {len(annotations)} boxes "
        f"in {time.perf_counter() - start:.1f} s; {unplaced} planned findings found no room and were not drawn"
    )


def ensure_cxr_phantom(root: str, num_images: int, image_size: int, seed: int,
                       style: str = DEFAULT_STYLE) -> Tuple[str, str]:
    """Generate the split unless it exists; returns (json_file, image_root). Safe with concurrent processes."""
    final_dir = phantom_dir(root, num_images, image_size, seed, style)
    json_file, image_root = os.path.join(final_dir, "annotations.json"), os.path.join(final_dir, "images")
    if not os.path.isdir(final_dir):
        parent, key = os.path.split(final_dir)
        os.makedirs(parent, exist_ok=True)
        with open(os.path.join(parent, f".{key}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not os.path.isdir(final_dir):
                for stale in glob.glob(os.path.join(parent, f".{key}.tmp-*")):
                    shutil.rmtree(stale, ignore_errors=True)  # left by a killed process; we hold the lock
                tmp_dir = os.path.join(parent, f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
                write_cxr_phantom(tmp_dir, num_images, image_size, seed, style)
                os.rename(tmp_dir, final_dir)
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"cxr_phantom folder {final_dir} exists but has no annotations.json; delete the folder to regenerate it"
        )
    return json_file, image_root


def load_cxr_phantom(name: str, root: str, num_images: int, image_size: int, seed: int,
                     style: str = DEFAULT_STYLE) -> List[dict]:
    """Dataset dicts of a phantom split, generating it on first use."""
    json_file, image_root = ensure_cxr_phantom(root, num_images, image_size, seed, style)
    return load_cxr_coco_json(json_file, image_root, VINDR_CXR_CLASSES, dataset_name=name)


def register_cxr_phantom(name: str, root: str, num_images: int, image_size: int, seed: int,
                         style: str = DEFAULT_STYLE) -> None:
    """Register a phantom split of `num_images` square images of side `image_size`, rendered from `seed` in
    `style` (a phantom_render.PHANTOM_STYLES name)."""
    phantom_style(style)
    final_dir = phantom_dir(root, num_images, image_size, seed, style)
    DatasetCatalog.register(name, lambda: load_cxr_phantom(name, root, num_images, image_size, seed, style))
    MetadataCatalog.get(name).set(
        thing_classes=list(VINDR_CXR_CLASSES),
        evaluator_type="coco",
        json_file=os.path.join(final_dir, "annotations.json"),
        image_root=os.path.join(final_dir, "images"),
        phantom_params={"num_images": num_images, "image_size": image_size, "seed": seed, "style": style},
    )


def register_all_cxr_phantom(root: str) -> None:
    """Register the built-in phantom splits (train 1000, val 200 images of 256 px in both styles; a held-out
    test 200; tiny 24/12 of 128 px)."""
    for name, (num_images, image_size, seed, style) in BUILTIN_PHANTOM_SPLITS.items():
        register_cxr_phantom(name, root, num_images, image_size, seed, style)
