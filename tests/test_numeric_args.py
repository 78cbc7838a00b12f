"""Every numeric argument of prepare_vindr, phantom_realism, detection_diagnostics, visualize_detections and
ablation_table is checked before any work: a bad value exits with status 2 and one line naming the argument."""
import importlib.util
from pathlib import Path

import pytest

from cxr_codet.data.converters.vindr_cli import main as prepare_vindr

REPO = Path(__file__).resolve().parents[1]
KAGGLE_TRAIN = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\nk0,ILD,5,R1,10,10,300,300\n" + "".join(
    f"k{i},No finding,14,R1,,,,\n" for i in range(1, 8))


def _tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, "main", None) or getattr(module, f"{name}_main")


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("flag, value, message", [
    ("--long-side", "-5", "--long-side must be 0 (keep the DICOM size) or at least 16, got -5"),
    ("--long-side", "3", "--long-side must be 0 (keep the DICOM size) or at least 16, got 3"),
    ("--val-fraction", "1.5", "--val-fraction must be in (0, 1), got 1.5"),
    ("--val-fraction", "0", "--val-fraction must be in (0, 1), got 0.0"),
    ("--iou-thr", "nan", "--iou-thr must be a finite number, got nan"),
    ("--iou-thr", "0", "--iou-thr must be in (0, 1], got 0.0"),
    ("--min-readers", "0", "--min-readers must be at least 1, got 0"),
    ("--workers", "0", "--workers must be at least 1, got 0"),
    ("--seed", "-1", "--seed must be at least 0, got -1"),
])
def test_prepare_vindr_refuses_a_bad_number_before_writing_anything(tmp_path, capsys, flag, value, message):
    (tmp_path / "train.csv").write_text(KAGGLE_TRAIN)
    (tmp_path / "sizes.csv").write_text("image_id,width,height\n" + "".join(f"k{i},400,400\n" for i in range(8)))
    out = tmp_path / "out"
    code = prepare_vindr([str(tmp_path / "train.csv"), "--csv-only", "--size-table", str(tmp_path / "sizes.csv"),
                          "--out", str(out), flag, value])
    assert code == 2
    assert _one_line(capsys) == f"prepare_vindr: cannot continue: {message}"
    assert not out.exists()


def test_prepare_vindr_takes_the_smallest_long_side_and_zero(tmp_path, capsys):
    (tmp_path / "train.csv").write_text(KAGGLE_TRAIN)
    (tmp_path / "sizes.csv").write_text("image_id,width,height\n" + "".join(f"k{i},400,400\n" for i in range(8)))
    for long_side in ("16", "0"):
        assert prepare_vindr([str(tmp_path / "train.csv"), "--csv-only", "--size-table", str(tmp_path / "sizes.csv"),
                              "--out", str(tmp_path / long_side), "--long-side", long_side]) == 0


@pytest.mark.parametrize("tool, argv, message", [
    ("phantom_realism", ["--max-images", "-1"], "phantom_realism.py: error: --max-images must be at least 0, got -1"),
    ("detection_diagnostics", ["absent_gt.json", "absent_results.json", "--relative-area-ranges", "0.5", "0.1"],
     "detection_diagnostics.py: error: --relative-area-ranges must be two increasing fractions of the image area in "
     "(0, 1], got [0.5, 0.1]"),
    ("detection_diagnostics", ["absent_gt.json", "absent_results.json", "--relative-area-ranges", "0", "nan"],
     "detection_diagnostics.py: error: --relative-area-ranges must be two increasing fractions of the image area in "
     "(0, 1], got [0.0, nan]"),
    ("visualize_detections", ["--dataset", "cxr_phantom_tiny_val", "--results", "absent.json", "--output", "o.png",
                              "--min-score", "1.5"],
     "visualize_detections.py: error: --min-score must be in [0, 1], got 1.5"),
    ("visualize_detections", ["--dataset", "cxr_phantom_tiny_val", "--results", "absent.json", "--output", "o.png",
                              "--per-finding", "0", "--hit-iou", "0"],
     "visualize_detections.py: error: --per-finding must be at least 1, got 0; --hit-iou must be in (0, 1], got 0.0"),
    ("ablation_table", ["--run", "base=absent", "--precision", "-1"],
     "ablation_table.py: error: --precision must be in [0, 10], got -1"),
])
def test_tools_refuse_a_bad_number_with_one_line_before_reading_files(tmp_path, capsys, monkeypatch, tool, argv,
                                                                       message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        _tool(tool)(argv)
    assert exit_info.value.code == 2
    assert _one_line(capsys) == message
    assert sorted(p.name for p in tmp_path.iterdir()) == []
