"""Where a study's runs live and what state each is in: `<output-root>/<study>/<row>/seed<S>/`, done when its
eval_results.json is the final evaluation, to resume when it holds a checkpoint, else new."""
from pathlib import Path

from ..evaluation.results_io import EVAL_RESULTS_FILENAME
from .spec import Study, StudyRow

RUN_LOG = "study_run.log"
FINAL_WEIGHTS = "model_final.pth"
EVAL_ON_PREFIX = "eval_on_"  # <run>/eval_on_<dataset>/: the output folder of an --evaluate-on evaluation


def run_dir(output_root, study: Study, row: StudyRow, seed: int) -> Path:
    return Path(output_root) / study.name / row.name / f"seed{seed}"


def run_state(output_dir: Path) -> str:
    """'done' when eval_results.json is the final evaluation (no checkpoint, or written after
    model_final.pth), 'resume' when a checkpoint exists, else 'new'."""
    output_dir = Path(output_dir)
    results = output_dir / EVAL_RESULTS_FILENAME
    tag = output_dir / "last_checkpoint"
    checkpoint = output_dir / tag.read_text().strip() if tag.is_file() else None
    if results.is_file():
        if checkpoint is None:
            return "done"
        if checkpoint.name == "model_final.pth" and (
            not checkpoint.is_file() or results.stat().st_mtime >= checkpoint.stat().st_mtime
        ):
            return "done"
    return "resume" if checkpoint is not None and checkpoint.is_file() else "new"
