"""Check every image of a dataset when its loader is built, so that a missing or broken file stops the run at
start-up instead of when a batch reaches it hours later (and again after each resume).

Each image must exist, have a readable header (only the header is read: Pillow's lazy open) and, when the
record gives one, the size of its record as the mapper will see it: after the EXIF orientation that OpenCV
and detectron2 apply when decoding (a JPEG stored 3000x2000 with orientation 6 is decoded 2000x3000). With
`resize` (the loader's shortest-edge resize) it must survive the resize (an image 10 px wide and 4000 px tall
can shrink below a pixel). The image ids of a set must be of one type (COCO evaluation sorts them). Files are
checked in parallel threads, with a progress bar on large sets. Headers of good files (size and orientation)
are cached by path, size and modification time in `default_cache_file()`
($XDG_CACHE_HOME/cxr_codet/image_headers.json, else ~/.cache/...), so a second start only stats the files.
"""
import json
import logging
import numbers
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from detectron2.data.transforms import ResizeShortestEdge
from detectron2.utils import comm
from PIL import Image
from tqdm import tqdm

from .image_limits import oversize_problem

logger = logging.getLogger(__name__)

SHOWN_OFFENDERS = 5
PROGRESS_MIN_IMAGES = 1000  # smaller sets are checked without a progress bar
_THREADS = min(32, 4 * (os.cpu_count() or 1))
_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class BadImagesError(ValueError):
    """Images of a dataset cannot be used; the one-line message lists the first few and their count."""


def default_cache_file() -> Path:
    """Where checked image headers are cached (DATALOADER.IMAGE_CHECK_CACHE overrides it)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "cxr_codet" / "image_headers.json"


@dataclass(frozen=True)
class Resize:
    """The loader's shortest-edge resize: the smallest short side it draws, its cap on the long side, and the
    config keys that set them (named in messages). A short side of 0 means no resize."""

    short_side: int
    max_size: int
    keys: str

    def problem(self, width: int, height: int) -> Optional[str]:
        if not self.short_side:
            return None
        new_height, new_width = ResizeShortestEdge.get_output_shape(height, width, self.short_side, self.max_size)
        if min(new_height, new_width) >= 1:
            return None
        return (f"resized to a short side of {self.short_side} within {self.max_size} pixels ({self.keys}) its "
                f"{width}x{height} pixels would become {new_width}x{new_height}; the resize cannot make an image that "
                f"{'thin' if width < height else 'flat'}")


def check_images(
    records: Sequence[dict], what: str, skip_bad: bool = False, cache_file: Optional[Union[str, Path]] = None,
    resize: Optional[Resize] = None,
) -> List[dict]:
    """`records` whose image passes the check; bad ones raise `BadImagesError`, or are skipped and counted
    (logged) with `skip_bad`. `what` names the set in messages ("training set (nih_cxr14_train)"); `resize`: the
    loader's resize, which every image must survive. Image ids of mixed types are refused (ValueError), skip or not."""
    _check_id_types(records, what)
    cache_file = Path(cache_file) if cache_file else default_cache_file()
    cache = _load_cache(cache_file)
    show_progress = len(records) >= PROGRESS_MIN_IMAGES and comm.is_main_process()
    with ThreadPoolExecutor(_THREADS) as pool:
        results = list(tqdm(
            pool.map(lambda record: _check_one(record, cache, resize), records), total=len(records),
            desc=f"checking images of the {what}", unit="image", disable=not show_progress, dynamic_ncols=True,
        ))
    fresh = {entry[0]: entry[1] for _, entry in results if entry is not None}
    if fresh:
        _save_cache(cache_file, {**cache, **fresh})
    bad = [(record, problem) for record, (problem, _) in zip(records, results) if problem]
    if not bad:
        return list(records)
    listed = "; ".join(
        f"{record.get('file_name')} (image_id {record.get('image_id')}): {problem}"
        for record, problem in bad[:SHOWN_OFFENDERS]
    )
    more = f"; and {len(bad) - SHOWN_OFFENDERS} more" if len(bad) > SHOWN_OFFENDERS else ""
    summary = f"{len(bad)} of {len(records)} images of the {what}"
    if skip_bad and len(bad) == len(records):
        raise BadImagesError(f"{summary} cannot be used, none is left to skip to: {listed}{more}")
    if not skip_bad:
        raise BadImagesError(
            f"{summary} cannot be used: {listed}{more}. Fix or remove them, or set DATALOADER.SKIP_BAD_IMAGES True "
            "to skip them"
        )
    logger.warning("DATALOADER.SKIP_BAD_IMAGES: skipping %s: %s%s", summary, listed, more)
    problems = {id(record) for record, _ in bad}
    return [record for record in records if id(record) not in problems]


def _check_id_types(records: Sequence[dict], what: str) -> None:
    """Refuse image ids of more than one type (e.g. 1 and "2"), naming an example of each."""
    examples: Dict[str, dict] = {}
    counts: Dict[str, int] = {}
    for record in records:
        image_id = record.get("image_id")
        kind = ("bool" if isinstance(image_id, bool) else "int" if isinstance(image_id, numbers.Integral)
                else type(image_id).__name__)
        counts[kind] = counts.get(kind, 0) + 1
        examples.setdefault(kind, record)
    if len(counts) > 1:
        listed = ", ".join(f"{n} {kind} (e.g. {examples[kind].get('image_id')!r} for {examples[kind].get('file_name')})"
                           for kind, n in counts.items())
        raise ValueError(f"the image ids of the {what} mix types: {listed}; COCO evaluation sorts them, so give every "
                         "image an id of one type (integers, as COCO does)")


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1..8; 1 when absent). A PNG's is read only when it precedes the pixel data
    (Pillow would decode the whole image to look further)."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        return int(image.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except Exception:  # a malformed EXIF block: decoders then ignore it too
        return 1


def _check_one(record: dict, cache: Dict[str, list], resize: Optional[Resize] = None
               ) -> Tuple[Optional[str], Optional[tuple]]:
    """(problem or None, new cache entry or None) for one record's image."""
    file_name = record.get("file_name")
    if file_name is None:
        return "the record has no file_name", None
    try:
        stat = os.stat(file_name)
    except OSError:
        return "the file does not exist", None
    if stat.st_size == 0:
        return "the file is empty", None
    key = os.path.abspath(file_name)
    cached = cache.get(key)
    entry = None
    if cached and len(cached) == 5 and cached[:2] == [stat.st_size, stat.st_mtime_ns]:
        width, height, orientation = cached[2:]
    else:  # also entries of an older cache, which did not store the orientation
        try:
            with Image.open(file_name) as image:
                width, height = image.size
                orientation = _exif_orientation(image)
        except Exception as e:  # Pillow raises several types for broken headers; the file is unusable either way
            return f"unreadable image header ({type(e).__name__}: {e})", None
        entry = (key, [stat.st_size, stat.st_mtime_ns, width, height, orientation])
    decoded = (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)
    expected = (record.get("width"), record.get("height"))
    if None not in expected and tuple(expected) != decoded:
        says = f"the dataset says {expected[0]}x{expected[1]}"
        if decoded == (width, height):
            return f"the file is {width}x{height} pixels, {says}", entry
        return (f"the file is {width}x{height} pixels but its EXIF orientation {orientation} turns it to "
                f"{decoded[0]}x{decoded[1]} when decoded; {says}"), entry
    return oversize_problem(*decoded) or (resize.problem(*decoded) if resize else None), entry


def _load_cache(path: Path) -> Dict[str, list]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _save_cache(path: Path, cache: Dict[str, list]) -> None:
    """Write atomically (several processes may check at once); a cache that cannot be written is only logged."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.part")
        partial.write_text(json.dumps(cache))
        os.replace(partial, path)
    except OSError as e:
        logger.warning("could not write the image check cache %s: %s", path, e)
