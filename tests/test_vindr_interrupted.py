"""tools/prepare_vindr.py killed with SIGKILL mid-conversion and restarted: no half-written PNG is ever
visible, and the restart converts only the images that are missing (synthetic VinDr-like DICOMs)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from cxr_codet.data.converters.images import ImageJob, remove_partial_files
from cxr_codet.data.synthetic_vindr import plan_images, synthetic_pixels, write_synthetic_vindr_release

REPO = Path(__file__).resolve().parents[1]
NUM_IMAGES = 14


def _complete_pngs(folder: Path):
    """Names of PNGs in `folder` that decode completely; fails on any that does not."""
    names = []
    for path in sorted(folder.glob("*.png")):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image is not None and image.shape[0] > 0, f"{path} is not a complete PNG"
        names.append(path.stem)
    return names


@pytest.mark.slow
def test_sigkilled_conversion_restarts_with_only_the_missing_images(tmp_path):
    release, out = tmp_path / "release", tmp_path / "out"
    write_synthetic_vindr_release(release, NUM_IMAGES, seed=3, side_range=(1000, 1200))
    images = out / "vindr_cxr" / "images" / "train"
    command = [sys.executable, "tools/prepare_vindr.py", str(release), "--out", str(out), "--workers", "1",
               "--long-side", "0", "--bit-depth", "16"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(images.glob("*.png"))) < 3:
        assert proc.poll() is None, "the conversion ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _complete_pngs(images)
    assert 3 <= len(done_before) < NUM_IMAGES
    assert not (out / "vindr_cxr" / "annotations").exists()  # annotations are written after the images

    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=600)
    report = json.loads((out / "vindr_cxr" / "conversion_report.json").read_text())
    stage = next(note for note in report["notes"] if note.startswith("image stage"))
    assert f"'existing': {len(done_before)}" in stage
    assert f"'converted': {NUM_IMAGES - len(done_before)}" in stage
    assert len(_complete_pngs(images)) == NUM_IMAGES
    assert not list(images.glob("*.part"))


def test_partial_files_of_a_killed_run_are_removed(tmp_path):
    (tmp_path / "a.png").write_bytes(b"png")
    (tmp_path / "b.png.1234.part").write_bytes(b"half")
    (tmp_path / "notes.part").write_bytes(b"not ours")
    jobs = [ImageJob("a", tmp_path / "a.dicom", tmp_path / "a.png"), ImageJob("c", tmp_path / "c.dicom", tmp_path / "c.png")]
    assert remove_partial_files(jobs) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "notes.part"]


def test_synthetic_release_varies_like_vindr():
    plan = plan_images(8, seed=0)
    assert {image.bits_stored for image in plan} == {12, 14, 16}
    assert {image.photometric for image in plan} == {"MONOCHROME1", "MONOCHROME2"}
    assert {image.jpeg2000 for image in plan} == {True, False}
    assert all(2000 <= side <= 3400 for image in plan for side in (image.width, image.height))
    pixels = synthetic_pixels(64, 48, 12, np.random.default_rng(0))
    assert pixels.shape == (48, 64) and pixels.dtype == np.uint16 and pixels.max() <= 4095
