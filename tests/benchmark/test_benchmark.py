"""tools/benchmark.py on tiny phantom settings: every task, one config and a side-by-side comparison, the JSON
report and the table. Figures are only checked to be positive and finite (no timing thresholds)."""
import json
import math
import os
import subprocess
import sys

import pytest
from conftest import BASELINE, REPO_ROOT, tiny_opts
from tiny_cxr_codet import embeddings_file

from cxr_codet.benchmark.cli import main
from cxr_codet.benchmark.memory import PeakMemory
from cxr_codet.benchmark.runner import _median_ratios, run_benchmarks
from cxr_codet.benchmark.tasks import BenchmarkSettings

CODET = "configs/phantom/cxr_codet_R18_FPN_phantom.yaml"


FIGURES = {
    "train": {"seconds_per_iteration", "images_per_second", "peak_memory_mib"},
    "eval": {"seconds_per_image", "images_per_second", "peak_memory_mib"},
    "data": {"seconds_per_batch", "images_per_second", "peak_memory_mib"},
}


def _tiny_overrides(tmp_path):
    return tiny_opts(
        "SOLVER.IMS_PER_BATCH", 2, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
        # random 16-d class embeddings instead of encoding the descriptions at every CXR-CoDet build
        "MODEL.TEXT_ENCODER.CLASS_EMBEDDINGS_PATH", embeddings_file(tmp_path),
    )


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
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=os.environ)
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


def _report(train_a, train_b, eval_a, eval_b, device="cuda"):
    def entry(figures_a, figures_b, ratios):
        return {"A": {"median": figures_a}, "B": {"median": figures_b}, "B/A": ratios}

    return {
        "machine": {"device": device, "cpu": "x86", "gpu": "NVIDIA H200", "torch": "2.11"},
        "results": {
            "train": entry({"images_per_second": 2 / train_a}, {"images_per_second": 2 / train_b},
                           {"seconds_per_iteration": train_b / train_a}),
            "eval": entry({"seconds_per_image": eval_a}, {"seconds_per_image": eval_b},
                          {"seconds_per_image": eval_b / eval_a}),
        },
    }


def test_gpu_summary_puts_fp32_and_amp_figures_side_by_side(tmp_path, capsys):
    from cxr_codet.benchmark.cli import main
    from cxr_codet.benchmark.report import summary_rows

    fp32 = _report(0.2, 0.21, 0.03, 0.031)
    amp = _report(0.05, 0.06, 0.02, 0.022)  # 40 images/s, CoDet 1.2x per iteration, 1.1x inference
    rows = {row[0]: row[1:] for row in summary_rows(fp32, amp)}
    assert rows == {
        "baseline training images/s per process": ["10.00", "40.00"],
        "baseline inference s/image": ["0.0300", "0.0200"],
        "CXR-CoDet / baseline s/iteration": ["1.050", "1.200"],
        "CXR-CoDet / baseline inference s/image": ["1.033", "1.100"],
    }
    paths = []
    for name, report in (("fp32", fp32), ("amp", _report(0.05, 0.06, 0.02, 0.022, device="cpu"))):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(report))
    main(["--summarize", *map(str, paths)])
    printed = capsys.readouterr().out
    assert "Measured on NVIDIA H200 (device cpu, torch 2.11)" in printed
    assert "targets these figures are read against: docs/benchmarks.md" in printed
