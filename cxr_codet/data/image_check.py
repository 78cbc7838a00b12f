"""Check every image of a dataset when its loader is built, so that a missing or broken file stops the run at
start-up instead of when a batch reaches it hours later (and again after each resume).

Each image must exist, have a readable header (only the header is read: Pillow's lazy open) and, when the
record gives one, the size of its record. Files are checked in parallel threads, with a progress bar on large
sets. Headers of good files are cached by path, size and modification time in `default_cache_file()`
($XDG_CACHE_HOME/cxr_codet/image_headers.json, else ~/.cache/...), so a second start only stats the files.
"""
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from detectron2.utils import comm
from PIL import Image
from tqdm import tqdm

from .image_limits import oversize_problem

logger = logging.getLogger(__name__)

SHOWN_OFFENDERS = 5
PROGRESS_MIN_IMAGES = 1000  # smaller sets are checked without a progress bar
_THREADS = min(32, 4 * (os.cpu_count() or 1))


class BadImagesError(ValueError):
    """Images of a dataset cannot be used; the one-line message lists the first few and their count."""


def default_cache_file() -> Path:
    """Where checked image headers are cached (DATALOADER.IMAGE_CHECK_CACHE overrides it)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "cxr_codet" / "image_headers.json"


def check_images(
    records: Sequence[dict], what: str, skip_bad: bool = False, cache_file: Optional[Union[str, Path]] = None
) -> List[dict]:
    """`records` whose image passes the check; bad ones raise `BadImagesError`, or are skipped and counted
    (logged) with `skip_bad`. `what` names the set in messages ("training set (nih_cxr14_train)")."""
    cache_file = Path(cache_file) if cache_file else default_cache_file()
    cache = _load_cache(cache_file)
    show_progress = len(records) >= PROGRESS_MIN_IMAGES and comm.is_main_process()
    with ThreadPoolExecutor(_THREADS) as pool:
        results = list(tqdm(
            pool.map(lambda record: _check_one(record, cache), records), total=len(records),
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
    if not skip_bad:
        raise BadImagesError(
            f"{summary} cannot be used: {listed}{more}. Fix or remove them, or set DATALOADER.SKIP_BAD_IMAGES True "
            "to skip them"
        )
    logger.warning("DATALOADER.SKIP_BAD_IMAGES: skipping %s: %s%s", summary, listed, more)
    problems = {id(record) for record, _ in bad}
    return [record for record in records if id(record) not in problems]


def _check_one(record: dict, cache: Dict[str, list]) -> Tuple[Optional[str], Optional[tuple]]:
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
    if cached and cached[:2] == [stat.st_size, stat.st_mtime_ns]:
        width, height = cached[2:]
    else:
        try:
            with Image.open(file_name) as image:
                width, height = image.size
        except Exception as e:  # Pillow raises several types for broken headers; the file is unusable either way
            return f"unreadable image header ({type(e).__name__}: {e})", None
        entry = (key, [stat.st_size, stat.st_mtime_ns, width, height])
    expected = (record.get("width"), record.get("height"))
    if None not in expected and tuple(expected) != (width, height):
        return f"the file is {width}x{height} pixels, the dataset says {expected[0]}x{expected[1]}", entry
    return oversize_problem(width, height), entry


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
