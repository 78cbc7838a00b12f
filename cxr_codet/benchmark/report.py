"""What a benchmark report shows: the table of medians (and B/A), the machine the figures were measured on, and
the side-by-side summary of two reports (without and with SOLVER.AMP) that scripts/gpu_benchmark.sh prints; the
targets those figures are read against are in docs/benchmarks.md."""
import json
import os
import platform
from pathlib import Path
from typing import Dict, List, Optional

import torch
from tabulate import tabulate


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


def summary_rows(fp32: dict, amp: dict) -> List[List[str]]:
    """Rows (figure, without AMP, with AMP) from two tools/benchmark.py reports of a baseline (A) and CXR-CoDet (B)
    with tasks train and eval: `fp32` without and `amp` with SOLVER.AMP."""

    def median(report, task, label, figure):
        return report["results"][task][label]["median"][figure]

    def ratio(report, task, figure):
        return report["results"][task]["B/A"][figure]

    figures = [
        ("baseline training images/s per process", lambda r: f"{median(r, 'train', 'A', 'images_per_second'):.2f}"),
        ("baseline inference s/image", lambda r: f"{median(r, 'eval', 'A', 'seconds_per_image'):.4f}"),
        ("CXR-CoDet / baseline s/iteration", lambda r: f"{ratio(r, 'train', 'seconds_per_iteration'):.3f}"),
        ("CXR-CoDet / baseline inference s/image", lambda r: f"{ratio(r, 'eval', 'seconds_per_image'):.3f}"),
    ]
    return [[name, value(fp32), value(amp)] for name, value in figures]


def summarize(fp32_path: Path, amp_path: Path) -> str:
    """The summary table of two reports written by --output (see `summary_rows`), with the machine they ran on."""
    fp32, amp = (json.loads(Path(path).read_text()) for path in (fp32_path, amp_path))
    machine = amp["machine"]
    where = f"{machine.get('gpu', machine['cpu'])} (device {machine['device']}, torch {machine['torch']})"
    table = tabulate(summary_rows(fp32, amp), headers=["figure", "fp32", "AMP"], tablefmt="github")
    return f"Measured on {where}; the targets these figures are read against: docs/benchmarks.md\n{table}"
