"""tools/benchmark.py on tiny phantom settings: every task, one config and a side-by-side comparison, the JSON
report and the table. Figures are only checked to be positive and finite (no timing thresholds)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_cxr_codet import embeddings_file

from cxr_codet.benchmark.cli import main
from cxr_codet.benchmark.memory import PeakMemory
from cxr_codet.benchmark.runner import _median_ratios, run_benchmarks
from cxr_codet.benchmark.tasks import BenchmarkSettings

REPO = Path(__file__).resolve().parents[1]
BASELINE = "configs/phantom/faster_rcnn_R18_FPN_phantom.yaml"
CODET = "configs/phantom/cxr_codet_R18_FPN_phantom.yaml"
FIGURES = {
    "train": {"seconds_per_iteration", "images_per_second", "peak_memory_mib"},
    "eval": {"seconds_per_image", "images_per_second", "peak_memory_mib"},
    "data": {"seconds_per_batch", "images_per_second", "peak_memory_mib"},
}


def _tiny_overrides(tmp_path):
    return [
        "DATASETS.TRAIN", "('cxr_phantom_tiny_train',)", "DATASETS.TEST", "('cxr_phantom_tiny_val',)",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
        "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
        # random 16-d class embeddings instead of encoding the descriptions at every CXR-CoDet build
        "MODEL.TEXT_ENCODER.CLASS_EMBEDDINGS_PATH", embeddings_file(tmp_path),
    ]


def _positive_finite(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_compare_two_configs_writes_medians_and_ratios(tmp_path, capsys):
    output = tmp_path / "results.json"
    report = main([
        "--config-file", BASELINE, "--compare-config", CODET, "--iterations", "2", "--warmup", "1",
        "--cached-batches", "2", "--rounds", "2", "--output", str(output), *_tiny_overrides(tmp_path),
    ])
    assert json.loads(output.read_text()) == json.loads(json.dumps(report))
    assert report["settings"] == {"iterations": 2, "warmup": 1, "cached_batches": 2, "rounds": 2}
    assert report["configs"]["A"]["config_file"] == BASELINE and report["configs"]["B"]["config_file"] == CODET
    assert report["machine"]["device"] == "cpu" and report["machine"]["cpu_count"] >= 1
    results = report["results"]
    assert set(results) == set(FIGURES)
    for task, figures in FIGURES.items():
        for label in ("A", "B"):
            assert len(results[task][label]["rounds"]) == 2
            median = results[task][label]["median"]
            assert set(median) == figures
            for name, value in median.items():
                if name == "peak_memory_mib" and task == "data":
                    assert math.isfinite(value) and value >= 0  # the loader may allocate next to nothing
                else:
                    assert _positive_finite(value), (task, label, name, value)
        for name in figures - {"peak_memory_mib"}:
            assert _positive_finite(results[task]["B/A"][name]), (task, name)
    # images/s follows from s/iter and the 2 images of a batch; B/A of a rate is the inverse of B/A of a time
    train = results["train"]["A"]["rounds"][0]
    assert train["images_per_second"] == pytest.approx(2 / train["seconds_per_iteration"])
    table = capsys.readouterr().out
    assert "A: faster_rcnn_R18_FPN_phantom" in table and "B: cxr_codet_R18_FPN_phantom" in table
    assert "B/A" in table and "seconds_per_iteration" in table and "seconds_per_image" in table


@pytest.mark.slow
def test_tool_runs_one_config(tmp_path):
    cmd = [
        sys.executable, "tools/benchmark.py", "--config-file", BASELINE, "--task", "eval", "--iterations", "2",
        "--warmup", "1", "--output", str(tmp_path / "eval.json"), *_tiny_overrides(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=os.environ)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "seconds_per_image" in proc.stdout and "B/A" not in proc.stdout
    results = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert list(results) == ["eval"] and "B/A" not in results["eval"]
    assert all(_positive_finite(v) for v in results["eval"]["A"]["median"].values())


def test_ratios_are_medians_of_per_round_ratios():
    a = [{"s": 1.0}, {"s": 2.0}, {"s": 4.0}]
    b = [{"s": 3.0}, {"s": 2.0}, {"s": 4.0}]
    assert _median_ratios(a, b) == {"s": 1.0}
    assert _median_ratios([{"s": 0.0}], [{"s": 1.0}]) == {"s": None}


def test_bad_settings_and_tasks_are_refused():
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        BenchmarkSettings(iterations=0)
    with pytest.raises(ValueError, match=r"unknown benchmark task\(s\) \['speed'\]"):
        run_benchmarks({"A": None}, ["speed"], BenchmarkSettings())


def test_peak_memory_sees_a_large_allocation():
    with PeakMemory("cpu") as memory:
        block = bytearray(64 * 2**20)
        block[::4096] = b"\x01" * len(block[::4096])  # touch every page so it is resident
        del block
    assert memory.peak_mib > 48
    with PeakMemory("cpu") as small:
        pass
    assert 0 <= small.peak_mib < 16
