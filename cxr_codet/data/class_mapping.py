"""Cross-dataset class mapping, kept as data in datasets/metadata/class_mapping.json.

Used when a model trained on one vocabulary is evaluated on another (a VinDr-CXR detector on NIH boxes or
MS-CXR phrases): each source class maps to one target class or to None (no equivalent; the file says why).
Names are matched case-insensitively; results use the target vocabulary's own spelling.
"""
import functools
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .classes import NIH_CXR14_BBOX_CLASSES, VINDR_CXR_CLASSES
from .datasets.ms_cxr import MS_CXR_CLASSES

CLASS_MAPPING_FILE = Path(__file__).resolve().parents[2] / "datasets" / "metadata" / "class_mapping.json"
VOCABULARIES: Dict[str, Tuple[str, ...]] = {
    "vindr_cxr": tuple(VINDR_CXR_CLASSES),
    "nih_cxr14_bbox": tuple(NIH_CXR14_BBOX_CLASSES),
    "ms_cxr": tuple(MS_CXR_CLASSES),
}


@functools.lru_cache(maxsize=None)
def load_class_mappings(path: Path = CLASS_MAPPING_FILE) -> Dict[Tuple[str, str], dict]:
    """Read and validate the mapping file: {(source, target): {"classes": {...}, "notes": {...}}}."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"class mapping file {path} is missing")
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)["mappings"]
    mappings = {}
    for entry in entries:
        source, target = entry["source"], entry["target"]
        where = f"{path}: mapping {source} -> {target}"
        for vocabulary in (source, target):
            if vocabulary not in VOCABULARIES:
                raise ValueError(f"{where}: unknown vocabulary {vocabulary!r}; known: {sorted(VOCABULARIES)}")
        classes = {_canonical(name, source, where): value for name, value in entry["classes"].items()}
        uncovered = [name for name in VOCABULARIES[source] if name not in classes]
        if uncovered:
            raise ValueError(f"{where}: source classes {uncovered} are not mapped (map them to null if needed)")
        classes = {name: None if value is None else _canonical(value, target, where) for name, value in classes.items()}
        notes = {_canonical(name, source, where): text for name, text in entry.get("notes", {}).items()}
        missing_notes = [name for name, value in classes.items() if value is None and name not in notes]
        if missing_notes:
            raise ValueError(f"{where}: {missing_notes} map to null without a note saying why")
        mappings[(source, target)] = {"classes": classes, "notes": notes}
    return mappings


def _canonical(name: str, vocabulary: str, where: str) -> str:
    by_lowercase = {n.lower(): n for n in VOCABULARIES[vocabulary]}
    if str(name).lower() not in by_lowercase:
        raise ValueError(f"{where}: {name!r} is not a class of {vocabulary} {list(VOCABULARIES[vocabulary])}")
    return by_lowercase[str(name).lower()]


def class_mapping(source: str, target: str) -> Dict[str, Optional[str]]:
    """Every class of `source` -> its `target` class, or None when `target` has no equivalent."""
    mappings = load_class_mappings()
    if (source, target) not in mappings:
        raise KeyError(f"no class mapping {source} -> {target}; available: {sorted(mappings)}")
    return dict(mappings[(source, target)]["classes"])


def map_class_names(names: Sequence[str], source: str, target: str) -> List[Optional[str]]:
    """The `target` class of each `source` class name (None where unmapped); unknown names raise."""
    mapping = class_mapping(source, target)
    where = f"mapping {source} -> {target}"
    return [mapping[_canonical(name, source, where)] for name in names]


def unmapped_class_names(source: str, target: str, names: Optional[Sequence[str]] = None) -> List[str]:
    """The `source` classes (all, or those in `names`) with no equivalent in `target`."""
    mapping = class_mapping(source, target)
    where = f"mapping {source} -> {target}"
    candidates = VOCABULARIES[source] if names is None else [_canonical(n, source, where) for n in names]
    return [name for name in candidates if mapping[name] is None]


def mapping_note(source: str, target: str, name: str) -> Optional[str]:
    """Why `name` maps the way it does (or to nothing), when the mapping file says."""
    mappings = load_class_mappings()
    if (source, target) not in mappings:
        raise KeyError(f"no class mapping {source} -> {target}; available: {sorted(mappings)}")
    return mappings[(source, target)]["notes"].get(_canonical(name, source, f"mapping {source} -> {target}"))
