"""Study files for the studies tests: written from YAML text, a two-row study of the baseline config, and the
Student-t quantile the expected intervals use."""
import textwrap
from pathlib import Path

from conftest import BASELINE, REPO_ROOT

TRAIN_NET = REPO_ROOT / "tools" / "train_net.py"

T_975_DOF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)


def write_study(folder: Path, text: str, name: str = "study.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


TWO_ROWS = f"""
    name: demo
    base: base
    seeds: [0, 1]
    overrides: [SOLVER.MAX_ITER, 7, SOLVER.STEPS, "(5, 6)"]
    rows:
      - name: base
        config: {BASELINE}
      - name: better
        label: "LR 0.01"
        config: {BASELINE}
        overrides: [SOLVER.BASE_LR, 0.01, INPUT.MIN_SIZE_TRAIN, [128, 160]]
"""
