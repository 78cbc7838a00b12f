"""The VinDr-CXR data path at full size: DICOM -> PNG conversion (tools/prepare_vindr.py's `convert_vindr`)
per worker count, and the training loader on the converted PNGs; behind tools/benchmark.py's task
`vindr_data_path`.

Each conversion runs in a fresh spawned process, so its time and peak memory are its own: wall-clock
images/s of `convert_vindr` (pool start-up and the annotation stage included, which makes extrapolating to
18,000 images conservative) and the peak resident set of the largest converting process (with 1 worker
the converting process itself; with more, the largest pool worker; both have torch imported, as
prepare_vindr's workers do).
"""
import multiprocessing
import resource
import shutil
import time
from pathlib import Path
from typing import Dict, Sequence

from detectron2.data import DatasetCatalog

from ..data.classes import VINDR_CXR_CLASSES
from ..data.converters import VindrConversionOptions, convert_vindr
from ..data.datasets.coco_cxr import register_cxr_coco
from ..data.synthetic_vindr import write_synthetic_vindr_release

KIB = 1024


def ensure_synthetic_release(root: Path, num_images: int, seed: int = 0) -> Path:
    """A synthetic Kaggle-layout release of `num_images` full-size DICOMs in `root`, reused when present."""
    root = Path(root)
    stamp = root / f"complete_{num_images}_{seed}"
    if not stamp.exists():
        shutil.rmtree(root, ignore_errors=True)
        write_synthetic_vindr_release(root, num_images, seed)
        stamp.touch()
    return root


def _convert_and_measure(source: str, out_root: str, workers: int, bit_depth: int, queue) -> None:
    start = time.perf_counter()
    report = convert_vindr(Path(source), Path(out_root), VindrConversionOptions(workers=workers, bit_depth=bit_depth))
    seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    queue.put({"seconds": seconds, "peak_kib": own if workers <= 1 else children, "notes": report.notes})


def measure_conversion(source: Path, out_root: Path, workers: int, bit_depth: int) -> Dict[str, float]:
    """Convert `source` into a fresh `out_root` in a new process; images/s and peak RSS (MiB)."""
    shutil.rmtree(out_root, ignore_errors=True)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_convert_and_measure, args=(str(source), str(out_root), workers, bit_depth, queue))
    process.start()
    result = queue.get()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"conversion of {source} with {workers} worker(s) exited with {process.exitcode}")
    images = len(list((Path(out_root) / "vindr_cxr" / "images" / "train").glob("*.png")))
    return {"images": images, "images_per_second": images / result["seconds"], "peak_rss_mib": result["peak_kib"] / KIB}


def register_converted(name: str, out_root: Path) -> str:
    """Register the training split converted into `out_root` as dataset `name` (replacing an earlier one)."""
    base = Path(out_root) / "vindr_cxr"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    register_cxr_coco(name, str(base / "annotations" / "vindr_cxr_train.json"), str(base / "images" / "train"),
                      VINDR_CXR_CLASSES)
    return name


def data_path_figures(
    cfg, workdir: Path, num_images: int, loader_benchmark, settings, worker_counts: Sequence[int] = (1, 2)
) -> Dict[str, float]:
    """Conversion figures per worker count (8-bit PNGs) and with 1 worker to 16-bit PNGs, then the training
    loader of `cfg` (its INPUT sizes, DATALOADER.NUM_WORKERS, SOLVER.IMS_PER_BATCH) on the 8- and 16-bit PNGs,
    timed by `loader_benchmark(cfg, settings)`."""
    workdir = Path(workdir)
    source = ensure_synthetic_release(workdir / "release", num_images)
    figures = {}
    for workers in worker_counts:
        result = measure_conversion(source, workdir / "png8", workers, 8)
        figures[f"convert_w{workers}_images_per_second"] = result["images_per_second"]
        figures[f"convert_w{workers}_peak_rss_mib"] = result["peak_rss_mib"]
    if len(worker_counts) > 1:
        first, last = worker_counts[0], worker_counts[-1]
        figures[f"convert_scaling_w{last}_over_w{first}"] = (
            figures[f"convert_w{last}_images_per_second"] / figures[f"convert_w{first}_images_per_second"]
        )
    result = measure_conversion(source, workdir / "png16", 1, 16)
    figures["convert_16bit_w1_images_per_second"] = result["images_per_second"]
    for bits in (8, 16):
        loader_cfg = cfg.clone()
        loader_cfg.defrost()
        loader_cfg.DATASETS.TRAIN = (register_converted(f"synthetic_vindr_png{bits}", workdir / f"png{bits}"),)
        loader_cfg.freeze()
        figures[f"loader_{bits}bit_images_per_second"] = loader_benchmark(loader_cfg, settings)["images_per_second"]
    return figures
