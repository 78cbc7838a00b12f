"""Seeded train/val split of multi-label images, stratified so every finding also appears in val.

Each image is assigned to the stratum of its rarest finding (images without findings form their own
stratum); each stratum gives val its proportional share (largest remainder, so the total is exact);
then any finding still absent from val gets one image moved in, swapped against a val image whose
findings stay covered. VinDr-CXR has no patient ids, so the split unit is the image.
"""
from collections import Counter
from typing import Dict, List, Sequence, Tuple

import numpy as np

_NO_LABEL = ""


def split_train_val(
    image_ids: Sequence[str], labels: Sequence[Sequence[str]], val_fraction: float, seed: int = 0
) -> Tuple[List[str], List[str]]:
    """(train ids, val ids): val has round(len * val_fraction) images and every label with >= 2 images."""
    if len(image_ids) != len(labels):
        raise ValueError(f"{len(image_ids)} image ids but {len(labels)} label lists")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = int(len(image_ids) * val_fraction + 0.5)
    label_sets = [frozenset(x) for x in labels]
    frequency = Counter(label for label_set in label_sets for label in label_set)
    rng = np.random.default_rng(seed)

    strata: Dict[str, List[int]] = {}
    for index, label_set in enumerate(label_sets):
        key = min(label_set, key=lambda name: (frequency[name], name)) if label_set else _NO_LABEL
        strata.setdefault(key, []).append(index)
    val = set()
    for key, count in _largest_remainder_quotas(strata, n_val).items():
        members = np.array(strata[key])
        val.update(rng.permutation(members)[:count].tolist())
    _cover_every_label(label_sets, frequency, val, rng)
    train_ids = [image_ids[i] for i in range(len(image_ids)) if i not in val]
    val_ids = [image_ids[i] for i in sorted(val)]
    return train_ids, val_ids


def _largest_remainder_quotas(strata: Dict[str, List[int]], n_val: int) -> Dict[str, int]:
    """Per-stratum val counts proportional to stratum size that sum exactly to n_val."""
    total = sum(len(members) for members in strata.values())
    exact = {key: len(members) * n_val / total for key, members in strata.items()}
    quotas = {key: int(value) for key, value in exact.items()}
    by_remainder = sorted(exact, key=lambda key: (-(exact[key] - quotas[key]), key))
    for key in by_remainder[: n_val - sum(quotas.values())]:
        quotas[key] += 1
    return quotas


def _cover_every_label(label_sets, frequency: Counter, val: set, rng: np.random.Generator) -> None:
    """Swap images so each label with >= 2 images has one in val, keeping val's size and other labels."""
    for label in sorted(frequency, key=lambda name: (frequency[name], name)):
        in_val = Counter(name for i in val for name in label_sets[i])
        if in_val[label] or frequency[label] < 2:
            continue
        candidates = [i for i, s in enumerate(label_sets) if label in s and i not in val]
        incoming = candidates[int(rng.integers(len(candidates)))]
        removable = [
            i for i in sorted(val)
            if label not in label_sets[i] and all(in_val[name] >= 2 for name in label_sets[i])
        ]
        if not removable:
            continue
        removable.sort(key=lambda i: len(label_sets[i]))  # prefer images with no or few findings
        fewest = len(label_sets[removable[0]])
        pool = [i for i in removable if len(label_sets[i]) == fewest]
        val.discard(pool[int(rng.integers(len(pool)))])
        val.add(incoming)


def read_image_ids(path) -> List[str]:
    """Image ids from a text file, one per line ('#' comments and blank lines skipped; a ".png"/".dicom" suffix
    dropped); a duplicate is a ValueError naming the file and the line."""
    ids, lines = [], {}
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            text = raw.split("#", 1)[0].strip()
            for suffix in (".png", ".dicom", ".dcm"):
                if text.endswith(suffix):
                    text = text[: -len(suffix)]
            if not text:
                continue
            if text in lines:
                raise ValueError(f"{path}: line {number}: image id {text!r} is listed again (first on line {lines[text]})")
            lines[text] = number
            ids.append(text)
    if not ids:
        raise ValueError(f"{path}: no image id in the file")
    return ids


def split_by_ids(image_ids: Sequence[str], val_ids: Sequence[str], source: str) -> Tuple[List[str], List[str]]:
    """(train ids, val ids) with val exactly `val_ids` (an imported split, e.g. a paper's); ids not among
    `image_ids` are a ValueError naming `source` and how many are missing."""
    known = set(image_ids)
    absent = [i for i in val_ids if i not in known]
    if absent:
        raise ValueError(f"{source}: {len(absent)} of its {len(val_ids)} ids are not usable training images of the "
                         f"release (e.g. {absent[:3]}); the report's skipped items say why an image left")
    wanted = set(val_ids)
    return [i for i in image_ids if i not in wanted], [i for i in image_ids if i in wanted]
