"""The plan of a study: every row x seed with its folder, state and tools/train_net.py command line, after each
row's config was built with all its overrides (so a misspelt key fails before any training)."""
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..config import build_cfg
from ..engine.startup import check_run_config
from ..evaluation.results_io import EVAL_RESULTS_FILENAME
from .layout import EVAL_ON_PREFIX, FINAL_WEIGHTS, run_dir, run_state
from .spec import Study, StudyError, StudyRow, select_rows, selected_runs


@dataclass(frozen=True)
class PlannedRun:
    """One row x seed: its folder, state ('done', 'resume' or 'new') and command line."""

    row: StudyRow
    seed: int
    output_dir: Path
    state: str
    command: Tuple[str, ...]
    max_iter: int


def train_command(study: Study, row: StudyRow, seed: int, output_dir: Path, state: str,
                  train_script, num_gpus: Optional[int] = None) -> Tuple[str, ...]:
    """The tools/train_net.py command line of one run (flags first: train_net's KEY VALUE list ends it)."""
    command = [sys.executable, str(train_script), "--config-file", row.config]
    if num_gpus is not None:
        command += ["--num-gpus", str(num_gpus)]
    if state == "resume":
        command.append("--resume")
    command += ["OUTPUT_DIR", str(output_dir), "SEED", str(seed), *study.overrides, *row.overrides]
    return tuple(command)


def check_configs(study: Study, rows: Sequence[StudyRow], world_size: int = 1) -> dict:
    """Build each row's config with all its overrides and make a run's start-up checks on it (catches misspelt
    keys, bad values and batch layouts that cannot train before any training); returns {row name:
    SOLVER.MAX_ITER}."""
    max_iter = {}
    for row in rows:
        opts = ["OUTPUT_DIR", "study_check", "SEED", str(study.seeds[0]), *study.overrides, *row.overrides]
        try:
            cfg = build_cfg(row.config, opts)
            check_run_config(cfg, training=True, world_size=world_size)
        except Exception as error:  # detectron2 raises KeyError, ValueError, AssertionError, ...
            raise StudyError(f"{study.path}: row {row.name!r} ({row.config}): {type(error).__name__}: "
                             f"{error}") from None
        if not cfg.DATASETS.TEST:
            raise StudyError(f"{study.path}: row {row.name!r}: DATASETS.TEST is empty, so its runs would "
                             f"write no {EVAL_RESULTS_FILENAME} to tabulate")
        max_iter[row.name] = cfg.SOLVER.MAX_ITER
    return max_iter


def plan_runs(study: Study, output_root, train_script, only=None, num_gpus=None,
              seeds=None) -> List[PlannedRun]:
    """Every run of the selected rows and seeds, row-major, with its state and command."""
    rows = select_rows(study, only)
    runs = selected_runs(study, rows, seeds)
    max_iter = check_configs(study, rows, world_size=num_gpus or 1)
    plan = []
    for row, seed in runs:
        output_dir = run_dir(output_root, study, row, seed)
        state = run_state(output_dir)
        command = train_command(study, row, seed, output_dir, state, train_script, num_gpus)
        plan.append(PlannedRun(row, seed, output_dir, state, command, max_iter[row.name]))
    return plan


def eval_command(study: Study, row: StudyRow, seed: int, output_dir: Path, dataset: str,
                 train_script) -> Tuple[str, ...]:
    """The tools/train_net.py --eval-only command that evaluates a finished run's final weights on `dataset`,
    with the run's own config and overrides, into <run>/eval_on_<dataset>/."""
    return (sys.executable, str(train_script), "--config-file", row.config, "--eval-only",
            "OUTPUT_DIR", str(output_dir / f"{EVAL_ON_PREFIX}{dataset}"), "SEED", str(seed), *study.overrides,
            *row.overrides, "MODEL.WEIGHTS", str(output_dir / FINAL_WEIGHTS), "DATASETS.TEST", repr((dataset,)))
