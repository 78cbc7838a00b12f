"""The benchmark tasks behind tools/benchmark.py, measured as detectron2's own benchmark tool does
(BENCHMARK_TASKS, `--task NAME`):

- "train": seconds per iteration and images per second of the training step (forward, backward, optimizer
  and LR-scheduler step, as the trainer runs them) on a few batches taken from the real loader and cached,
  so data loading is excluded; timed after warm-up iterations.
- "eval": inference seconds per image at batch 1 (the model only, inputs cached from the test loader),
  after warm-up.
- "data": images per second of the training loader, mapper and DATALOADER.NUM_WORKERS included.
- "vindr_data_path": full-size synthetic VinDr DICOMs through prepare_vindr's conversion (1 and 2 workers,
  8- and 16-bit PNGs) and then the "data" task on the PNGs (data_path.py).
With SOLVER.AMP.ENABLED, "train" runs the AMP step and "eval" runs under autocast (engine/amp.py).
Each task also reports its peak memory from before the model or loader is built (`memory.PeakMemory`).
"""
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from ..engine.amp import build_train_loop, inference_autocast
from ..engine.checkpoint import AtomicDetectionCheckpointer
from ..engine.trainer import CXRTrainer
from .data_path import data_path_figures
from .memory import PeakMemory


@dataclass
class BenchmarkSettings:
    """How long each task runs; `iterations` counts training iterations, images (eval) or batches (data)."""

    iterations: int = 20
    warmup: int = 3
    cached_batches: int = 4
    rounds: int = 1

    def __post_init__(self):
        for name in ("iterations", "cached_batches", "rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"benchmark {name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"benchmark warmup must be >= 0, got {self.warmup}")


# task name -> function(cfg, settings) -> {figure name: value}
BENCHMARK_TASKS: Dict[str, Callable[..., Dict[str, float]]] = {}


def register_benchmark_task(name: str):
    """Decorator: make a benchmark function selectable as `--task name`."""

    def decorator(function):
        BENCHMARK_TASKS[name] = function
        return function

    return decorator


def _synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _timed(device: str, step: Callable[[], None], count: int) -> float:
    """Seconds that `count` calls of `step` take, the device synchronised at both ends."""
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(count):
        step()
    _synchronize(device)
    return time.perf_counter() - start


def _take(loader, count: int) -> List:
    """The first `count` items of `loader` (fewer when it is finite and shorter)."""
    iterator = iter(loader)
    items = list(itertools.islice(iterator, count))
    del iterator  # shuts DataLoader workers down
    return items


@register_benchmark_task("train")
def benchmark_train(cfg, settings: BenchmarkSettings) -> Dict[str, float]:
    """Training step speed on cached batches (no data loading), and peak memory."""
    with PeakMemory(cfg.MODEL.DEVICE) as memory:
        model = build_model(cfg)  # CXRTrainer.build_model would also log the whole model
        optimizer = CXRTrainer.build_optimizer(cfg, model)
        scheduler = CXRTrainer.build_lr_scheduler(cfg, optimizer)
        batches = _take(CXRTrainer.build_train_loader(cfg), settings.cached_batches)
        trainer = build_train_loop(cfg, model, itertools.cycle(batches), optimizer)
        with EventStorage(0) as storage:

            def step():
                storage.iter = trainer.iter
                trainer.run_step()  # raises FloatingPointError naming the iteration on a non-finite loss
                scheduler.step()
                trainer.iter += 1

            for _ in range(settings.warmup):
                step()
            seconds = _timed(cfg.MODEL.DEVICE, step, settings.iterations) / settings.iterations
    images = sum(len(batch) for batch in batches) / len(batches)
    return {"seconds_per_iteration": seconds, "images_per_second": images / seconds, "peak_memory_mib": memory.peak_mib}


@register_benchmark_task("eval")
def benchmark_eval(cfg, settings: BenchmarkSettings) -> Dict[str, float]:
    """Batch-1 inference speed of the model (MODEL.WEIGHTS when set) on the first test dataset, and peak memory."""
    if not cfg.DATASETS.TEST:
        raise ValueError("the eval benchmark reads images of DATASETS.TEST[0], and DATASETS.TEST is empty")
    dataset = cfg.DATASETS.TEST[0]
    with PeakMemory(cfg.MODEL.DEVICE) as memory:
        model = build_model(cfg)
        if cfg.MODEL.WEIGHTS:
            AtomicDetectionCheckpointer(model, trust_code=cfg.MODEL.TRUST_CHECKPOINT_CODE).load(cfg.MODEL.WEIGHTS)
        model.eval()
        if cfg.MODEL.TEST_VOCABULARY_FROM_DATASET and hasattr(model, "set_test_vocabulary"):
            model.set_test_vocabulary(MetadataCatalog.get(dataset).thing_classes)
        inputs = _take(CXRTrainer.build_test_loader(cfg, dataset), settings.warmup + settings.iterations)
        if not inputs:
            raise ValueError(f"the eval benchmark found no image in test dataset {dataset!r}")
        cycle = itertools.cycle(inputs)

        def step():
            with torch.no_grad(), inference_autocast(cfg):
                model(next(cycle))

        for _ in range(settings.warmup):
            step()
        seconds = _timed(cfg.MODEL.DEVICE, step, settings.iterations) / settings.iterations
    return {"seconds_per_image": seconds, "images_per_second": 1.0 / seconds, "peak_memory_mib": memory.peak_mib}


@register_benchmark_task("data")
def benchmark_data(cfg, settings: BenchmarkSettings) -> Dict[str, float]:
    """Training-loader throughput (reading, mapper, augmentation, batching), and peak memory of this process."""
    with PeakMemory("cpu") as memory:
        iterator = iter(CXRTrainer.build_train_loader(cfg))
        for _ in range(settings.warmup):
            next(iterator)
        images = 0
        start = time.perf_counter()
        for _ in range(settings.iterations):
            images += len(next(iterator))
        seconds = time.perf_counter() - start
        del iterator
    return {
        "seconds_per_batch": seconds / settings.iterations,
        "images_per_second": images / seconds,
        "peak_memory_mib": memory.peak_mib,
    }


@register_benchmark_task("vindr_data_path")
def benchmark_vindr_data_path(cfg, settings: BenchmarkSettings) -> Dict[str, float]:
    """VinDr-sized synthetic DICOMs (`iterations` of them, kept in OUTPUT_DIR/vindr_data_path/release):
    prepare_vindr conversion images/s and peak memory with 1 and 2 workers, then the `data` task on the
    converted 8- and 16-bit PNGs (see data_path.py)."""
    workdir = Path(cfg.OUTPUT_DIR) / "vindr_data_path"
    return data_path_figures(cfg, workdir, settings.iterations, benchmark_data, settings)
