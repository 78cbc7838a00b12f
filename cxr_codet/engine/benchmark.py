"""Speed and memory benchmarks behind tools/benchmark.py, measured as detectron2's own benchmark tool does.

Tasks (BENCHMARK_TASKS):
- "train": seconds per iteration and images per second of the training step (forward, backward, optimizer
  and LR-scheduler step, as the trainer runs them) on a few batches taken from the real loader and cached,
  so data loading is excluded; timed after warm-up iterations.
- "eval": inference seconds per image at batch 1 (the model only, inputs cached from the test loader),
  after warm-up.
- "data": images per second of the training loader, mapper and DATALOADER.NUM_WORKERS included.
- "vindr_data_path": full-size synthetic VinDr DICOMs through prepare_vindr's conversion (1 and 2 workers,
  8- and 16-bit PNGs) and then the "data" task on the PNGs (engine/data_path_benchmark.py).
With SOLVER.AMP.ENABLED, "train" runs the AMP step and "eval" runs under autocast (engine/amp.py).
Each task also reports its peak memory from before the model or loader is built (`memory.PeakMemory`).

`run_benchmarks` runs one config, or alternates two (A B, then B A, ...) over several rounds and reports each
figure's median and the median of the per-round B/A ratios, so that a comparison holds on a noisy machine.
"""
import argparse
import itertools
import json
import logging
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

from .amp import build_train_loop, inference_autocast
from .checkpoint import AtomicDetectionCheckpointer
from .data_path_benchmark import data_path_figures
from .launcher import build_cfg
from .memory import PeakMemory
from .trainer import CXRTrainer

logger = logging.getLogger(__name__)


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
    converted 8- and 16-bit PNGs (see engine/data_path_benchmark.py)."""
    workdir = Path(cfg.OUTPUT_DIR) / "vindr_data_path"
    return data_path_figures(cfg, workdir, settings.iterations, benchmark_data, settings)


def _median_figures(runs: Sequence[Dict[str, float]]) -> Dict[str, float]:
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def _median_ratios(runs_a: Sequence[Dict[str, float]], runs_b: Sequence[Dict[str, float]]):
    """Per figure, the median over rounds of B/A (None when A's figure is 0 in a round)."""
    ratios = {}
    for name in runs_a[0]:
        pairs = [(a[name], b[name]) for a, b in zip(runs_a, runs_b)]
        ratios[name] = None if any(a == 0 for a, _ in pairs) else statistics.median(b / a for a, b in pairs)
    return ratios


def run_benchmarks(configs: Dict[str, object], tasks: Sequence[str], settings: BenchmarkSettings) -> Dict[str, dict]:
    """Run `tasks` on one or two configs ({"A": cfg} or {"A": cfg, "B": cfg}) for settings.rounds rounds.

    Returns {task: {label: {"median": figures, "rounds": [figures, ...]}, "B/A": ratios (two configs)}}.
    """
    unknown = [task for task in tasks if task not in BENCHMARK_TASKS]
    if unknown:
        raise ValueError(f"unknown benchmark task(s) {unknown}; choose from {sorted(BENCHMARK_TASKS)}")
    if not 1 <= len(configs) <= 2:
        raise ValueError(f"benchmark one config or compare two; got {len(configs)}")
    labels = list(configs)
    runs = {task: {label: [] for label in labels} for task in tasks}
    for round_index in range(settings.rounds):
        order = labels if round_index % 2 == 0 else labels[::-1]
        for task in tasks:
            for label in order:
                logger.info("Benchmark round %d/%d: %s on config %s", round_index + 1, settings.rounds, task, label)
                figures = BENCHMARK_TASKS[task](configs[label], settings)
                logger.info("  %s", ", ".join(f"{k} {v:.4g}" for k, v in figures.items()))
                runs[task][label].append(figures)
    results = {}
    for task in tasks:
        results[task] = {label: {"median": _median_figures(runs[task][label]), "rounds": runs[task][label]}
                         for label in labels}
        if len(labels) == 2:
            results[task]["B/A"] = _median_ratios(runs[task][labels[0]], runs[task][labels[1]])
    return results


def format_table(results: Dict[str, dict], names: Dict[str, str]) -> str:
    """A plain-text table: one row per task and figure, a column per config (median), and B/A."""
    labels = list(names)
    headers = ["task", "figure"] + [f"{label}: {names[label]}" for label in labels]
    if len(labels) == 2:
        headers.append("B/A")
    rows = []
    for task, entry in results.items():
        for figure in entry[labels[0]]["median"]:
            row = [task, figure] + [f"{entry[label]['median'][figure]:.4g}" for label in labels]
            if len(labels) == 2:
                ratio = entry["B/A"][figure]
                row.append("n/a" if ratio is None else f"{ratio:.3f}")
            rows.append(row)
    return tabulate(rows, headers=headers, tablefmt="github")


def machine_info(device: str) -> Dict[str, object]:
    """What the figures were measured on."""
    info = {
        "platform": platform.platform(),
        "cpu": _cpu_model() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": device,
    }
    if str(device).startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


# detectron2's model zoo, Faster R-CNN R50-FPN 1x: 0.210 s/iteration for 16 images on 8 V100 (2 per GPU),
# 0.038 s/image inference (MODEL_ZOO.md of detectron2).
DETECTRON2_V100_TRAIN_IMAGES_PER_SECOND_PER_GPU = 16 / 8 / 0.210
DETECTRON2_V100_SECONDS_PER_IMAGE = 0.038
# Issue #14's GPU targets: baseline AMP training >= 3x that per GPU; CXR-CoDet / baseline <= 1.10 per
# training iteration and <= 1.05 per image at inference.
TARGET_AMP_SPEEDUP_OVER_V100 = 3.0
TARGET_TRAIN_RATIO = 1.10
TARGET_EVAL_RATIO = 1.05


def target_rows(fp32: dict, amp: dict) -> List[List[str]]:
    """Rows (figure, measured, target, met) from two tools/benchmark.py reports of baseline (A) vs CXR-CoDet
    (B) with tasks train and eval: `fp32` without and `amp` with SOLVER.AMP."""

    def median(report, task, label, figure):
        return report["results"][task][label]["median"][figure]

    rows = []
    v100 = DETECTRON2_V100_TRAIN_IMAGES_PER_SECOND_PER_GPU
    amp_images = median(amp, "train", "A", "images_per_second")
    rows.append(["baseline AMP training images/s per GPU", f"{amp_images:.2f} ({amp_images / v100:.2f}x V100)",
                 f">= {TARGET_AMP_SPEEDUP_OVER_V100 * v100:.1f} ({TARGET_AMP_SPEEDUP_OVER_V100:g}x {v100:.2f})",
                 amp_images >= TARGET_AMP_SPEEDUP_OVER_V100 * v100])
    rows.append(["baseline fp32 training images/s per GPU", f"{median(fp32, 'train', 'A', 'images_per_second'):.2f}",
                 f"(V100: {v100:.2f})", None])
    for name, report in (("fp32", fp32), ("AMP", amp)):
        seconds = median(report, "eval", "A", "seconds_per_image")
        rows.append([f"baseline {name} inference s/image", f"{seconds:.4f}",
                     f"(V100: {DETECTRON2_V100_SECONDS_PER_IMAGE})", None])
        train_ratio = report["results"]["train"]["B/A"]["seconds_per_iteration"]
        eval_ratio = report["results"]["eval"]["B/A"]["seconds_per_image"]
        rows.append([f"CXR-CoDet / baseline s/iteration, {name}", f"{train_ratio:.3f}", f"<= {TARGET_TRAIN_RATIO}",
                     train_ratio <= TARGET_TRAIN_RATIO])
        rows.append([f"CXR-CoDet / baseline inference s/image, {name}", f"{eval_ratio:.3f}", f"<= {TARGET_EVAL_RATIO}",
                     eval_ratio <= TARGET_EVAL_RATIO])
    return [row[:3] + ["" if row[3] is None else ("yes" if row[3] else "NO")] for row in rows]


def summarize(fp32_path: Path, amp_path: Path) -> str:
    """The target table of two reports written by --output (see `target_rows`), with the machine they ran on."""
    fp32, amp = (json.loads(Path(path).read_text()) for path in (fp32_path, amp_path))
    machine = amp["machine"]
    where = f"{machine.get('gpu', machine['cpu'])} (device {machine['device']}, torch {machine['torch']})"
    note = "" if str(machine["device"]).startswith("cuda") else "\nCPU run: the targets are GPU targets."
    table = tabulate(target_rows(fp32, amp), headers=["figure", "measured", "target", "met"], tablefmt="github")
    return f"Measured on {where}{note}\n{table}"


def build_parser() -> argparse.ArgumentParser:
    """Arguments of tools/benchmark.py."""
    parser = argparse.ArgumentParser(
        prog="benchmark.py",
        description="Training, inference and data-loading speed and peak memory of a config, or of two configs "
        "side by side (alternating rounds, medians and B/A ratios).",
        epilog="example: python tools/benchmark.py --config-file configs/phantom/faster_rcnn_R18_FPN_phantom.yaml "
        "--compare-config configs/phantom/cxr_codet_R18_FPN_phantom.yaml --task train eval "
        "INPUT.MIN_SIZE_TEST 512 INPUT.MAX_SIZE_TEST 512",
    )
    parser.add_argument("--config-file", metavar="FILE", help="config A")
    parser.add_argument("--compare-config", metavar="FILE", help="config B, benchmarked alternately with A")
    parser.add_argument("--task", nargs="+", default=["train", "eval", "data"], choices=sorted(BENCHMARK_TASKS))
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations / images / batches per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations before timing")
    parser.add_argument("--cached-batches", type=int, default=4, help="training batches cached from the loader")
    parser.add_argument("--rounds", type=int, help="rounds per config (default: 3 when comparing, else 1)")
    parser.add_argument("--num-threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when CUDA is available")
    parser.add_argument("--output", type=Path, help="also write the results as JSON here")
    parser.add_argument("--summarize", nargs=2, type=Path, metavar=("FP32_JSON", "AMP_JSON"),
                        help="instead of benchmarking, compare two --output reports (baseline A vs CXR-CoDet B, "
                        "train and eval, without and with SOLVER.AMP) with detectron2's R50-FPN figures and the targets")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides applied to both configs")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Parse arguments, run the benchmarks, print the table, write --output; returns the report."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.summarize:
        print(summarize(*args.summarize))
        return {}
    if not args.config_file:
        parser.error("--config-file is required (unless --summarize)")
    setup_logger(name="cxr_codet")
    setup_logger(name="detectron2")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    files = {"A": args.config_file}
    if args.compare_config:
        files["B"] = args.compare_config
    configs = {label: build_cfg(path, args.opts, cpu=args.cpu) for label, path in files.items()}
    rounds = args.rounds or (3 if len(files) == 2 else 1)
    settings = BenchmarkSettings(args.iterations, args.warmup, args.cached_batches, rounds)
    results = run_benchmarks(configs, args.task, settings)
    names = {label: Path(path).stem for label, path in files.items()}
    report = {
        "machine": machine_info(configs["A"].MODEL.DEVICE),
        "settings": asdict(settings),
        "configs": {label: {"config_file": path, "opts": list(args.opts)} for label, path in files.items()},
        "results": results,
    }
    print(format_table(results, names))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1))
        print(f"\nWrote {args.output}")
    return report
