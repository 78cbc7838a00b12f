"""Parallel DICOM -> PNG conversion with a progress bar; re-runs skip images that are already converted.

A PNG counts as converted when it exists and has the size this run would produce (so changing
`long_side` re-converts). PNGs appear by rename, complete or not at all, so a killed run can be
restarted: it converts only the missing images and removes the partial files the kill left. Writes
only under the output folder, never into the source tree.
"""
import logging
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional

from PIL import Image
from tqdm import tqdm

from ..dicom import DicomReadError, read_dicom_image, read_dicom_size, resized_size, write_png
from .errors import ConverterError

logger = logging.getLogger(__name__)

CONVERTED, EXISTING, FAILED = "converted", "existing", "failed"
PNG_MODES = {8: "L", 16: "I;16"}  # how Pillow reports our 8- and 16-bit grayscale PNGs


@dataclass(frozen=True)
class ImageJob:
    """One DICOM to convert and the PNG to write."""

    image_id: str
    source: Path
    target: Path


@dataclass(frozen=True)
class ImageResult:
    """Outcome of one job: sizes of the DICOM and of the PNG, or the error that stopped it."""

    image_id: str
    status: str
    original_width: int = 0
    original_height: int = 0
    width: int = 0
    height: int = 0
    error: Optional[str] = None


def ensure_outside_source(output_dir: Path, source_dir: Path) -> None:
    """Refuse an output folder inside the release folder (the source tree is read-only to converters)."""
    output_dir, source_dir = Path(output_dir).resolve(), Path(source_dir).resolve()
    if output_dir == source_dir or source_dir in output_dir.parents:
        raise ConverterError(
            f"output folder {output_dir} is inside the source release {source_dir}; choose another --out"
        )


def convert_images(
    jobs: Iterable[ImageJob], long_side: Optional[int], bit_depth: int = 8, workers: int = 1
) -> List[ImageResult]:
    """Run every job (in `workers` processes when > 1), showing progress; failures are returned, not raised."""
    jobs = list(jobs)
    remove_partial_files(jobs)
    arguments = [(job, long_side, bit_depth) for job in jobs]
    progress = dict(total=len(jobs), desc="DICOM -> PNG", unit="image", dynamic_ncols=True)
    if workers <= 1 or len(jobs) <= 1:
        return [convert_one(*a) for a in tqdm(arguments, **progress)]
    # spawn: workers start clean instead of forking a parent that holds torch/OpenMP thread pools
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        # chunksize 1: an image takes ~1 s, so spreading them one by one keeps every worker busy to the end
        stream = pool.imap_unordered(_convert_packed, arguments, chunksize=1)
        return list(tqdm(stream, **progress))


def remove_partial_files(jobs: Iterable[ImageJob]) -> int:
    """Delete `<name>.png.<pid>.part` files that a killed run left beside the PNGs (`write_png` writes to
    such a file and renames it, so a PNG itself is never half-written); returns how many."""
    removed = 0
    for folder in sorted({job.target.parent for job in jobs}):
        for partial in folder.glob("*.png.*.part") if folder.is_dir() else ():
            partial.unlink(missing_ok=True)
            removed += 1
    if removed:
        logger.info("Removed %d partial PNG files left by an interrupted conversion", removed)
    return removed


def convert_one(job: ImageJob, long_side: Optional[int], bit_depth: int) -> ImageResult:
    """Convert one DICOM unless a PNG of the expected size is already there."""
    try:
        original = read_dicom_size(job.source)
        expected = resized_size(*original, long_side)
        if _png_header(job.target) == (expected, PNG_MODES[bit_depth]):
            return ImageResult(job.image_id, EXISTING, *original, *expected)
        image = read_dicom_image(job.source, long_side=long_side, bit_depth=bit_depth)
        write_png(image.pixels, job.target)
        return ImageResult(job.image_id, CONVERTED, *original, image.width, image.height)
    except DicomReadError as exc:
        return ImageResult(job.image_id, FAILED, error=str(exc))
    except Exception as exc:  # one bad file must not end a run over thousands
        return ImageResult(job.image_id, FAILED, error=f"{job.source}: {type(exc).__name__}: {exc}")


def _convert_packed(arguments) -> ImageResult:
    return convert_one(*arguments)


def _png_header(path: Path):
    """((width, height), mode) from the PNG header without decoding; None when missing or unreadable."""
    try:
        with Image.open(path) as image:
            return image.size, image.mode
    except (OSError, SyntaxError):
        return None
