"""studies/plan.py and layout.py: each row's config checked before any run, the selected seeds, run states and
command lines."""
import os
from pathlib import Path

import pytest
from conftest import BASELINE
from study_yaml import TRAIN_NET, TWO_ROWS, write_study

from cxr_codet.studies.layout import run_state
from cxr_codet.studies.plan import plan_runs, train_command
from cxr_codet.studies.spec import StudyError, load_study


def test_config_errors_surface_before_any_run(tmp_path, in_repo):
    typo = write_study(tmp_path, TWO_ROWS.replace("SOLVER.BASE_LR", "SOLVER.BASE_LRR"))
    with pytest.raises(StudyError, match=r"row 'better' \(configs/phantom/.*\): .*Non-existent key: SOLVER.BASE_LRR"):
        plan_runs(load_study(typo), tmp_path / "out", TRAIN_NET)
    no_test = write_study(tmp_path, TWO_ROWS.replace('"(5, 6)"]', '"(5, 6)", DATASETS.TEST, "()"]'), "t.yaml")
    with pytest.raises(StudyError, match=r"row 'base': DATASETS.TEST is empty"):
        plan_runs(load_study(no_test), tmp_path / "out", TRAIN_NET)
    with pytest.raises(StudyError, match=r"--only \['nope'\]: not rows of"):
        plan_runs(load_study(write_study(tmp_path, TWO_ROWS)), tmp_path / "out", TRAIN_NET, only=["nope"])
    with pytest.raises(StudyError, match=r"--seed \[5\]: not seeds of .*; seeds: \[0, 1\]"):
        plan_runs(load_study(write_study(tmp_path, TWO_ROWS)), tmp_path / "out", TRAIN_NET, seeds=[1, 5])


def test_seed_selection_plans_only_those_seeds_row_major(tmp_path, in_repo):
    plan = plan_runs(load_study(write_study(tmp_path, TWO_ROWS)), tmp_path / "out", TRAIN_NET, seeds=[1])
    assert [(run.row.name, run.seed) for run in plan] == [("base", 1), ("better", 1)]
    assert all(run.output_dir.name == "seed1" and "1" == run.command[run.command.index("SEED") + 1]
               for run in plan)


def test_run_state_skips_only_final_evaluations(tmp_path):
    run = tmp_path / "run"
    assert run_state(run) == "new"
    run.mkdir()
    (run / "metrics.json").write_text("{}\n")  # killed before its first checkpoint
    assert run_state(run) == "new"
    (run / "model_0000004.pth").write_bytes(b"x")
    (run / "last_checkpoint").write_text("model_0000004.pth")
    assert run_state(run) == "resume"
    (run / "eval_results.json").write_text("{}")  # a periodic evaluation during training
    assert run_state(run) == "resume"
    (run / "model_final.pth").write_bytes(b"x")
    (run / "last_checkpoint").write_text("model_final.pth")
    os.utime(run / "eval_results.json", (1000, 1000))  # older than model_final.pth: killed while evaluating
    assert run_state(run) == "resume"
    os.utime(run / "eval_results.json")
    os.utime(run / "model_final.pth", (1000, 1000))
    assert run_state(run) == "done"
    evaluated_only = tmp_path / "eval_only"
    evaluated_only.mkdir()
    (evaluated_only / "eval_results.json").write_text("{}")
    assert run_state(evaluated_only) == "done"


def test_train_command_puts_flags_before_the_overrides(tmp_path, in_repo):
    study = load_study(write_study(tmp_path, TWO_ROWS))
    command = train_command(study, study.rows[1], 1, Path("out/demo/better/seed1"), "resume", "tools/train_net.py",
                            num_gpus=8)
    assert command[1:] == (
        "tools/train_net.py", "--config-file", BASELINE, "--num-gpus", "8", "--resume",
        "OUTPUT_DIR", "out/demo/better/seed1", "SEED", "1", "SOLVER.MAX_ITER", "7", "SOLVER.STEPS", "(5, 6)",
        "SOLVER.BASE_LR", "0.01", "INPUT.MIN_SIZE_TRAIN", "(128, 160)",
    )
    assert "--resume" not in train_command(study, study.rows[0], 0, Path("o"), "new", "t.py")
