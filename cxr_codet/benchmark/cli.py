"""The command line of tools/benchmark.py: speed and peak memory of a config, or of two configs side by side
(see docs/benchmarks.md)."""
import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
from detectron2.utils.logger import setup_logger

from ..config import build_cfg
from ..engine.startup import check_run_config
from .report import format_table, machine_info, summarize
from .runner import run_benchmarks
from .tasks import BENCHMARK_TASKS, BenchmarkSettings


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
                        help="instead of benchmarking, summarise two --output reports (baseline A vs CXR-CoDet B, "
                        "train and eval, without and with SOLVER.AMP) side by side")
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
    for cfg in configs.values():
        check_run_config(cfg, training=bool(set(args.task) - {"eval"}))
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
