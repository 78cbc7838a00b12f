"""`cxr_phantom_pairs`: synthetic prior/current image pairs whose lesions grow, shrink or stay, for the progression head.

Each pair is one patient (one phantom anatomy, see phantom_render.py) imaged twice with its own exposure,
noise and a small shift. One to three lesions (PAIR_FINDINGS) lie in distinct lung zones (upper, mid, lower
of either lung: the six regions of REGION_NAMES, named from the patient's side as in Chest ImaGenome). Each
lesion gets a comparison label, uniformly: "worsened" (small or absent before, full size now), "improved"
(full size before, small or gone now) or "no change" (the same size both times); "small" is the drawn
lesion shrunk about its centre to 45-65% with 70-90% of its contrast.

A split is written in the Chest ImaGenome comparison format and read back by `load_imagenome_comparisons`:
`<root>/cxr_phantom_pairs/v<version>_n<pairs>_s<size>_seed<seed>/` with `images/<pair>_prior.png`,
`images/<pair>_current.png`, `comparisons.csv` (one row per lesion) and `regions.csv` (the six zone boxes of
every image). Splits are generated on first use under a file lock; the same parameters give the same files.
"""
import csv
import fcntl
import functools
import glob
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from tqdm import tqdm

from ..descriptions import finding_descriptions
from .imagenome import BOX_COLUMNS, COMPARISON_COLUMNS, PROGRESSION_LABELS, SENTENCE_COLUMN, load_imagenome_comparisons
from .phantom_render import FINDING_DRAWERS, LUNG_DARKNESS, MARKING_CONTRAST, Canvas, LesionLayer, _expose

logger = logging.getLogger(__name__)

# Bump when what a pair looks like changes: old splits then live in other folders and are not reused.
PHANTOM_PAIRS_VERSION = 1
PAIR_FINDINGS = ("Nodule/Mass", "Consolidation", "Lung Opacity", "Infiltration")
SIDES = ("right", "left")  # lung 0 lies on the image left: the patient's right
ZONES = ("upper", "mid", "lower")
REGION_NAMES = tuple(f"{side} {zone} lung zone" for side in SIDES for zone in ZONES)
LESION_COUNT_PROBABILITIES = (0.5, 0.35, 0.15)  # 1, 2 or 3 lesions per pair
MAX_PLACEMENT_TRIES = 12
MAX_SHIFT = 0.03  # largest shift of an image, as a fraction of its side
SMALL_SCALE, SMALL_STRENGTH = (0.45, 0.65), (0.7, 0.9)
ABSENT_PROBABILITY = 0.25  # a worsened lesion is new, an improved one resolved, this often

# name -> (num_pairs, image_size, seed)
BUILTIN_PHANTOM_PAIR_SPLITS = {
    "cxr_phantom_pairs_train": (600, 128, 10),
    "cxr_phantom_pairs_val": (150, 128, 11),
    "cxr_phantom_pairs_tiny_train": (12, 64, 12),
    "cxr_phantom_pairs_tiny_val": (6, 64, 13),
}


@dataclass
class Lesion:
    """A drawn lesion, its region and change, and its size at each time point ((scale, strength) or None)."""

    finding: str
    region: str
    comparison: str
    layer: LesionLayer
    centre: Tuple[float, float]
    prior: Optional[Tuple[float, float]]
    current: Optional[Tuple[float, float]]


@dataclass
class PhantomPair:
    """Two uint8 images of one phantom patient, their zone boxes {region: [x1, y1, x2, y2]} and lesions."""

    prior: np.ndarray
    current: np.ndarray
    prior_boxes: Dict[str, List[float]]
    current_boxes: Dict[str, List[float]]
    lesions: List[Lesion]
    unplaced: int


def _lung_span(canvas: Canvas, k: int) -> Tuple[float, float, float, float]:
    """(left, top, right, bottom) of lung k in normalised coordinates (apex to costophrenic angle)."""
    _, cx, cy, ax, ay, base = canvas.lungs[k]
    return cx - ax, cy - ay, cx + ax, base


def zone_boxes(canvas: Canvas) -> Dict[str, List[float]]:
    """The six lung zones as normalised [x1, y1, x2, y2]: each lung's height cut in thirds."""
    boxes = {}
    for k, side in enumerate(SIDES):
        left, top, right, bottom = _lung_span(canvas, k)
        step = (bottom - top) / len(ZONES)
        for z, zone in enumerate(ZONES):
            boxes[f"{side} {zone} lung zone"] = [left, top + z * step, right, top + (z + 1) * step]
    return boxes


def zone_of(canvas: Canvas, centre: Tuple[float, float]) -> Optional[str]:
    """The region holding a point given in pixels, or None outside both lungs' spans."""
    x, y = centre[0] / canvas.size, centre[1] / canvas.size
    k = 0 if x < canvas.mid_x else 1
    _, top, _, bottom = _lung_span(canvas, k)
    z = int(np.floor((y - top) / (bottom - top) * len(ZONES)))
    return f"{SIDES[k]} {ZONES[z]} lung zone" if 0 <= z < len(ZONES) else None


def _states(rng: np.random.Generator, comparison: str):
    """(prior, current) sizes of a lesion with this comparison; None: not visible."""
    full = (1.0, 1.0)
    small = (float(rng.uniform(*SMALL_SCALE)), float(rng.uniform(*SMALL_STRENGTH)))
    if comparison == "worsened":
        return (None if rng.random() < ABSENT_PROBABILITY else small), full
    if comparison == "improved":
        return full, (None if rng.random() < ABSENT_PROBABILITY else small)
    same = full if rng.random() < 0.5 else small
    return same, same


def _place_lesions(canvas: Canvas, rng: np.random.Generator) -> Tuple[List[Lesion], int]:
    """1-3 lesions in distinct zones with random findings and comparisons; also how many found no room."""
    count = int(rng.choice(len(LESION_COUNT_PROBABILITIES), p=LESION_COUNT_PROBABILITIES)) + 1
    lesions, unplaced = [], 0
    for _ in range(count):
        finding = str(rng.choice(PAIR_FINDINGS))
        comparison = str(rng.choice(PROGRESSION_LABELS))
        for _ in range(MAX_PLACEMENT_TRIES):
            layer = FINDING_DRAWERS[finding](canvas, rng)
            if layer is None or not layer.extent.any():
                continue
            rows, cols = np.nonzero(layer.extent)
            centre = (float(cols.mean()) + 0.5, float(rows.mean()) + 0.5)
            region = zone_of(canvas, centre)
            if region is not None and region not in {lesion.region for lesion in lesions}:
                prior, current = _states(rng, comparison)
                lesions.append(Lesion(finding, region, comparison, layer, centre, prior, current))
                break
        else:
            unplaced += 1
    return lesions, unplaced


def _scaled(layer: np.ndarray, centre: Tuple[float, float], scale: float) -> np.ndarray:
    """`layer` shrunk (scale < 1) about `centre` (pixels)."""
    if scale == 1.0:
        return layer
    matrix = np.float32([[scale, 0, (1 - scale) * centre[0]], [0, scale, (1 - scale) * centre[1]]])
    return cv2.warpAffine(layer.astype(np.float32), matrix, (layer.shape[1], layer.shape[0]), flags=cv2.INTER_LINEAR)


def _render_time_point(canvas: Canvas, lesions: List[Lesion], states, rng: np.random.Generator,
                       shift: Tuple[float, float]) -> np.ndarray:
    """One exposure of the patient with each lesion at its state, shifted by `shift` pixels."""
    size = canvas.size
    exposure = (rng.uniform(0.85, 1.15), rng.uniform(-0.05, 0.05), rng.uniform(0.8, 1.25), rng.uniform(0.4, 0.7),
                rng.uniform(0.012, 0.03))
    noise = rng.standard_normal((size, size)).astype(np.float32)
    heel = rng.uniform(-0.04, 0.04) * (canvas.y - 0.5) + rng.uniform(-0.03, 0.03) * (canvas.x - 0.5)
    add = np.zeros((size, size), np.float32)
    for lesion, state in zip(lesions, states):
        if state is not None:
            add += state[1] * _scaled(lesion.layer.add, lesion.centre, state[0])
    lung = canvas.aerated
    attenuation = canvas.tissue - LUNG_DARKNESS * lung + heel + MARKING_CONTRAST * lung * canvas.markings + add
    matrix = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
    attenuation = cv2.warpAffine(attenuation.astype(np.float32), matrix, (size, size), borderMode=cv2.BORDER_REPLICATE)
    return _expose(attenuation, exposure, noise)


def _pixel_boxes(boxes: Dict[str, List[float]], size: int, shift: Tuple[float, float]) -> Dict[str, List[float]]:
    """Normalised boxes in pixels of an image shifted by `shift`, clipped to it."""
    return {name: [float(np.clip(v * size + shift[i % 2], 0, size)) for i, v in enumerate(box)]
            for name, box in boxes.items()}


def render_phantom_pair(size: int, seed: int, index: int) -> PhantomPair:
    """Render pair `index` of a split with random seed `seed` (deterministic)."""
    rng = np.random.default_rng([seed, index, 0x9A1])
    canvas = Canvas(size, rng)
    lesions, unplaced = _place_lesions(canvas, rng)
    zones = zone_boxes(canvas)
    shifts = [tuple(rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=2) * size) for _ in range(2)]
    prior = _render_time_point(canvas, lesions, [lesion.prior for lesion in lesions], rng, shifts[0])
    current = _render_time_point(canvas, lesions, [lesion.current for lesion in lesions], rng, shifts[1])
    return PhantomPair(prior, current, _pixel_boxes(zones, size, shifts[0]), _pixel_boxes(zones, size, shifts[1]),
                       lesions, unplaced)


@functools.lru_cache(maxsize=None)
def _finding_phrase(finding: str) -> str:
    """The finding's short phrase ("consolidation") from the descriptions file."""
    return finding_descriptions("unelaborate")[finding][0]


def _change_sentence(lesion: Lesion) -> str:
    """A report-style sentence about the lesion's change (the text supervision of the progression head)."""
    phrase = _finding_phrase(lesion.finding)
    return {
        "worsened": f"Increased {phrase} in the {lesion.region}.",
        "improved": f"Decreased {phrase} in the {lesion.region}.",
        "no change": f"Stable {phrase} in the {lesion.region}.",
    }[lesion.comparison]


def write_cxr_phantom_pairs(out_dir: str, num_pairs: int, image_size: int, seed: int) -> None:
    """Render a split into `out_dir` (created): images/*.png, comparisons.csv and regions.csv."""
    if num_pairs < 1 or image_size < 64:
        raise ValueError(f"cxr_phantom_pairs needs num_pairs >= 1 and image_size >= 64, got {num_pairs}, {image_size}")
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir)
    comparisons, boxes, unplaced, start = [], [], 0, time.perf_counter()
    for index in tqdm(range(num_pairs), desc="cxr_phantom_pairs", leave=False, disable=None):
        pair = render_phantom_pair(image_size, seed, index)
        unplaced += pair.unplaced
        ids = {"prior": f"{index:06d}_prior", "current": f"{index:06d}_current"}
        for time_point, image, zone_box in (("prior", pair.prior, pair.prior_boxes), ("current", pair.current, pair.current_boxes)):
            file_name = ids[time_point] + ".png"
            if not cv2.imwrite(os.path.join(image_dir, file_name), image, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
                raise OSError(f"could not write {os.path.join(image_dir, file_name)}")
            boxes += [[ids[time_point], region, *(f"{v:.2f}" for v in box), file_name, image_size, image_size]
                      for region, box in zone_box.items()]
        comparisons += [[ids["current"], ids["prior"], lesion.region, lesion.finding, lesion.comparison,
                         _change_sentence(lesion)] for lesion in pair.lesions]
    _write_csv(os.path.join(out_dir, "comparisons.csv"), [*COMPARISON_COLUMNS, SENTENCE_COLUMN], comparisons)
    _write_csv(os.path.join(out_dir, "regions.csv"), [*BOX_COLUMNS, "file_name", "width", "height"], boxes)
    logger.info(f"Generated cxr_phantom_pairs split {out_dir}: {num_pairs} pairs, {len(comparisons)} region comparisons "
                f"in {time.perf_counter() - start:.1f} s; {unplaced} planned lesions found no free zone and were not drawn")


def _write_csv(path: str, header: List[str], rows: List[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def phantom_pairs_dir(root: str, num_pairs: int, image_size: int, seed: int) -> str:
    """The folder of the split with these parameters."""
    key = f"v{PHANTOM_PAIRS_VERSION}_n{num_pairs}_s{image_size}_seed{seed}"
    return os.path.join(os.path.expanduser(root), "cxr_phantom_pairs", key)


def _generate_once(final_dir: str, write: Callable[[str], None]) -> None:
    """Run `write(tmp_dir)` and rename it to `final_dir` unless that exists; safe with concurrent processes."""
    if os.path.isdir(final_dir):
        return
    parent, key = os.path.split(final_dir)
    os.makedirs(parent, exist_ok=True)
    with open(os.path.join(parent, f".{key}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isdir(final_dir):
            return
        for stale in glob.glob(os.path.join(parent, f".{key}.tmp-*")):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed process; we hold the lock
        tmp_dir = os.path.join(parent, f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        write(tmp_dir)
        os.rename(tmp_dir, final_dir)


def load_cxr_phantom_pairs(root: str, num_pairs: int, image_size: int, seed: int) -> List[dict]:
    """Comparison records of a phantom pair split, generating it on first use."""
    final_dir = phantom_pairs_dir(root, num_pairs, image_size, seed)
    _generate_once(final_dir, lambda tmp: write_cxr_phantom_pairs(tmp, num_pairs, image_size, seed))
    return load_imagenome_comparisons(os.path.join(final_dir, "comparisons.csv"), os.path.join(final_dir, "regions.csv"),
                                      os.path.join(final_dir, "images"), image_extension=".png")


def register_cxr_phantom_pairs(name: str, root: str, num_pairs: int, image_size: int, seed: int) -> None:
    """Register a phantom pair split of `num_pairs` pairs of square images of side `image_size`."""
    DatasetCatalog.register(name, lambda: load_cxr_phantom_pairs(root, num_pairs, image_size, seed))
    MetadataCatalog.get(name).set(
        evaluator_type="progression",
        mapper="image_pair",  # both images of a record, the data layer's ImagePairMapper
        progression_labels=list(PROGRESSION_LABELS),
        region_names=list(REGION_NAMES),
        phantom_pair_params={"num_pairs": num_pairs, "image_size": image_size, "seed": seed},
    )


def register_all_cxr_phantom_pairs(root: str) -> None:
    """Register the built-in phantom pair splits (train 600 and val 150 pairs of 128 px; tiny 12/6 of 64 px)."""
    for name, (num_pairs, image_size, seed) in BUILTIN_PHANTOM_PAIR_SPLITS.items():
        register_cxr_phantom_pairs(name, root, num_pairs, image_size, seed)
