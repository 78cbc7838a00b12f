"""studies/runner.py, processes.py and cli.py: a stand-in tools/train_net.py run per row and seed (resume,
failures, --evaluate-on, thread counts, SIGTERM), and a real tiny study killed mid-way (slow: starts processes)."""
import json
import math
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import BASELINE, REPO_ROOT
from scipy import stats
from study_yaml import TRAIN_NET, TWO_ROWS, write_study

from cxr_codet.studies.cli import run_study_main as main
from cxr_codet.studies.layout import run_state
from cxr_codet.studies.plan import plan_runs
from cxr_codet.studies.processes import run_lock
from cxr_codet.studies.spec import StudyError, load_study

# Stands in for tools/train_net.py: records its argv and thread settings, "trains" (checkpoint tag +
# model_final.pth) and writes eval_results.json with values that depend on the row and the seed; fails for rows
# named "broken". With --eval-only it evaluates MODEL.WEIGHTS on DATASETS.TEST: 5 AP50 lower than on
# cxr_phantom_val.
FAKE_TRAIN_NET = textwrap.dedent('''
    import ast, json, os, sys
    argv = sys.argv[1:]
    opts = dict(zip(argv[argv.index("OUTPUT_DIR")::2], argv[argv.index("OUTPUT_DIR") + 1::2]))
    out, seed = opts["OUTPUT_DIR"], int(opts["SEED"])
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "argv.json"), "a") as f:
        f.write(json.dumps(argv) + "\\n")
    with open(os.path.join(out, "threads.txt"), "a") as f:
        f.write(os.environ.get("OMP_NUM_THREADS", "unset") + "," + os.environ.get("MKL_NUM_THREADS", "unset") + "\\n")
    offset = 10.0 if "better" in out else 0.0
    if "--eval-only" in argv:
        assert os.path.isfile(opts["MODEL.WEIGHTS"]), opts["MODEL.WEIGHTS"]
        (dataset,) = ast.literal_eval(opts["DATASETS.TEST"])
        bbox = {"AP50": 55.0 + offset + seed, "APm": 30.0, "APl": 20.0, "AP50-Nodule/Mass": 45.0}
        json.dump({dataset: {"bbox": bbox}}, open(os.path.join(out, "eval_results.json"), "w"))
        sys.exit(0)
    print("iter: 0  total_loss: 1.0", flush=True)
    if "broken" in out:
        print("RuntimeError: the stand-in was told to fail", file=sys.stderr)
        sys.exit(3)
    open(os.path.join(out, "model_final.pth"), "w").close()
    open(os.path.join(out, "last_checkpoint"), "w").write("model_final.pth")
    bbox = {"AP50": 60.0 + offset + seed, "APm": 30.0 + seed, "APl": 20.0 - seed, "AP50-Nodule/Mass": 50.0 + seed}
    json.dump({"cxr_phantom_val": {"bbox": bbox}}, open(os.path.join(out, "eval_results.json"), "w"))
''')


@pytest.mark.slow  # starts a stand-in tools/train_net.py process per run
def test_runner_trains_each_row_and_seed_reports_failures_and_tabulates(tmp_path, in_repo, capsys):
    fake = tmp_path / "fake_train_net.py"
    fake.write_text(FAKE_TRAIN_NET)
    text = TWO_ROWS + f"""
      - name: broken
        config: {BASELINE}
    """
    path = write_study(tmp_path, text)
    out = tmp_path / "out"
    assert main([str(path), "--output-root", str(out), "--dry-run"], fake) == 0
    printed = capsys.readouterr().out
    assert "6 runs: 0 done, 0 to resume, 6 to start" in printed
    assert "1/6 base seed 0: would start: " in printed and "SOLVER.STEPS '(5, 6)'" in printed
    assert not out.exists()

    assert main([str(path), "--output-root", str(out)], fake) == 1
    printed, errors = capsys.readouterr()
    assert "[demo] 3/6 better seed 0: training | elapsed" in printed and "ETA" in printed
    assert "[demo] 5/6 broken seed 0: FAILED (exit status 3)" in printed
    assert "RuntimeError: the stand-in was told to fail" in printed  # the log's last lines
    assert "2 run(s) failed" in errors and "broken seed 1: exit status 3; log" in errors
    for row in ("base", "better"):
        for seed in (0, 1):
            argv = json.loads((out / "demo" / row / f"seed{seed}" / "argv.json").read_text())
            assert argv[:2] == ["--config-file", BASELINE] and argv[argv.index("SEED") + 1] == str(seed)
            assert "iter: 0" in (out / "demo" / row / f"seed{seed}" / "study_run.log").read_text()
    table = (out / "demo" / "table.md").read_text()
    assert table == printed[printed.index("### Study `demo`"):printed.index("[demo] table written")]
    assert "| base (base) | 2 | 60.5 ± 6.4 | 30.5 ± 6.4 | 19.5 ± 6.4 |" in table  # t(0.975, 1) * 0.707 / 1.414
    # Paired by seed the shift is +10 on both seeds: the per-seed interval excludes 0 too (dagger).
    assert "| LR 0.01 | 2 | 70.5 ± 6.4 (+10.0*\u2020) | 30.5 ± 6.4 (+0.0) | 19.5 ± 6.4 (+0.0) |" in table
    assert "| broken | 0 of 2 (missing: seed 0, seed 1) | missing | missing | missing |" in table
    data = json.loads((out / "demo" / "table.json").read_text())
    assert data["study"] == "demo" and data["seeds"] == [0, 1] and data["rows"][1]["name"] == "better"
    assert data["rows"][1]["overrides"] == ["SOLVER.BASE_LR", "0.01", "INPUT.MIN_SIZE_TRAIN", "(128, 160)"]
    assert data["rows"][1]["metrics"]["AP50"]["paired"] == {"seeds": [0, 1], "n": 2, "mean": 10.0, "std": 0.0,
                                                           "half_width": 0.0, "ci95": [10.0, 10.0]}
    assert (out / "demo" / "per_class_ap50.png").stat().st_size > 5000

    # Rerunning trains only what is not done; --only limits it to one row.
    assert main([str(path), "--output-root", str(out), "--only", "broken"], fake) == 1
    printed = capsys.readouterr().out
    assert "2 runs: 0 done, 0 to resume, 2 to start" in printed
    assert main([str(path), "--output-root", str(out), "--only", "base", "--only", "better"], fake) == 0
    assert "4 runs: 4 done, 0 to resume, 0 to start" in capsys.readouterr().out
    assert len((out / "demo" / "base" / "seed0" / "argv.json").read_text().splitlines()) == 1

    # A study's comparisons print under the table, by label; a pair with a row without runs says so.
    compared = write_study(tmp_path, text + "\n    comparisons: [[better, base], [broken, better]]\n", "c.yaml")
    assert main([str(compared), "--output-root", str(out), "--table-only"], fake) == 0
    table = (out / "demo" / "table.md").read_text()
    assert "| LR 0.01 - base | +10.0 [" in table and "; paired [+10.0, +10.0] | +0.0 [" in table
    assert "| broken - LR 0.01 | missing | missing | missing |" in table
    data = json.loads((out / "demo" / "table.json").read_text())
    assert [(c["row"], c["minus"]) for c in data["comparisons"]] == [("LR 0.01", "base"), ("broken", "LR 0.01")]


@pytest.mark.slow  # starts a stand-in tools/train_net.py process per run
def test_a_run_held_by_another_runner_is_left_to_it(tmp_path, in_repo, capsys):
    fake = tmp_path / "fake_train_net.py"
    fake.write_text(FAKE_TRAIN_NET)
    path, out = write_study(tmp_path, TWO_ROWS), tmp_path / "out"
    with run_lock(out / "demo" / "base" / "seed1") as locked:  # as a second runner of the study would
        assert locked
        assert main([str(path), "--output-root", str(out)], fake) == 0
    printed = capsys.readouterr().out
    assert "2/4 base seed 1: being trained by another runner, skipped" in printed
    assert "0 failed run(s), 1 left to another runner" in printed
    assert "| base (base) | 1 of 2 (missing: seed 1) | 60.0 | 30.0 | 20.0 |" in printed
    assert main([str(path), "--output-root", str(out)], fake) == 0
    assert "4 runs: 3 done, 0 to resume, 1 to start" in capsys.readouterr().out


@pytest.mark.slow  # starts a stand-in tools/train_net.py process per run
def test_a_row_with_its_own_seeds_runs_and_tabulates_them_and_pairs_on_the_shared_ones(tmp_path, in_repo, capsys):
    fake = tmp_path / "fake_train_net.py"
    fake.write_text(FAKE_TRAIN_NET)
    text = TWO_ROWS.replace("        overrides: [SOLVER.BASE_LR", "        seeds: [0, 1, 2, 3]\n        overrides: [SOLVER.BASE_LR")
    path, out = write_study(tmp_path, text), tmp_path / "out"
    study = load_study(path)
    assert (study.seeds, study.row("better").seeds, study.all_seeds) == ((0, 1), (0, 1, 2, 3), (0, 1, 2, 3))
    plan = plan_runs(study, out, TRAIN_NET, seeds=[1, 3])
    assert [(run.row.name, run.seed) for run in plan] == [("base", 1), ("better", 1), ("better", 3)]
    with pytest.raises(StudyError, match=r"--seed \[4\]: not seeds of .*; seeds: \[0, 1, 2, 3\]"):
        plan_runs(study, out, TRAIN_NET, seeds=[4])

    assert main([str(path), "--output-root", str(out)], fake) == 0
    printed = capsys.readouterr().out
    assert "6 runs: 0 done, 0 to resume, 6 to start" in printed and "6/6 better seed 3: training" in printed
    assert "seeds 0, 1; LR 0.01: seeds 0, 1, 2, 3; every row with" in printed
    # better: AP50 70..73 over 4 seeds (mean 71.5); base 60, 61. Paired on seeds 0 and 1 only: +10 both times.
    assert "| LR 0.01 | 4 | 71.5 ± 2.1 (+11.0*\u2020) |" in printed
    data = json.loads((out / "demo" / "table.json").read_text())
    assert data["rows"][1]["seeds"] == [0, 1, 2, 3] and data["rows"][0]["seeds"] == [0, 1]
    assert data["rows"][1]["metrics"]["AP50"]["paired"]["seeds"] == [0, 1]
    assert data["rows"][1]["metrics"]["AP50"]["paired"]["mean"] == 10.0


@pytest.mark.slow  # starts a stand-in tools/train_net.py process per run
def test_evaluate_on_adds_a_held_out_split_to_finished_runs_and_tabulates_it_apart(tmp_path, in_repo, capsys):
    fake = tmp_path / "fake_train_net.py"
    fake.write_text(FAKE_TRAIN_NET)
    path, out = write_study(tmp_path, TWO_ROWS), tmp_path / "out"
    assert main([str(path), "--output-root", str(out)], fake) == 0
    val_table = (out / "demo" / "table.md").read_text()
    (out / "demo" / "better" / "seed1" / "model_final.pth").unlink()  # e.g. results kept, weights not
    capsys.readouterr()

    assert main([str(path), "--output-root", str(out), "--evaluate-on", "cxr_phantom_test"], fake) == 1
    printed, errors = capsys.readouterr()
    assert "[demo] evaluating 4 runs on cxr_phantom_test" in printed
    assert "1/4 base seed 0: cxr_phantom_test results added to" in printed
    assert "better seed 1: no " in errors and "model_final.pth to evaluate" in errors
    run = out / "demo" / "base" / "seed1"
    argv = json.loads((run / "eval_on_cxr_phantom_test" / "argv.json").read_text())
    assert argv[:3] == ["--config-file", BASELINE, "--eval-only"]
    assert argv[-4:] == ["MODEL.WEIGHTS", str(run / "model_final.pth"), "DATASETS.TEST", "('cxr_phantom_test',)"]
    assert "SOLVER.STEPS" in argv  # the run's own overrides, so the model is built as it was trained
    results = json.loads((run / "eval_results.json").read_text())
    assert results["cxr_phantom_val"]["bbox"]["AP50"] == 61.0 and results["cxr_phantom_test"]["bbox"]["AP50"] == 56.0
    assert run_state(run) == "done"

    test_table = (out / "demo" / "table_cxr_phantom_test.md").read_text()
    assert (out / "demo" / "table.md").read_text() == val_table  # the study's own table stays as it was
    assert "`python tools/run_study.py " + str(path) + " --evaluate-on cxr_phantom_test`" in test_table
    assert "| base (base) | 2 | 55.5 ± 6.4 |" in test_table
    assert "| LR 0.01 | 1 of 2 (missing: seed 1 on cxr_phantom_test) | 65.0 (+9.5) |" in test_table
    assert json.loads((out / "demo" / "table_cxr_phantom_test.json").read_text())["dataset"] == "cxr_phantom_test"

    # Again: what has the split is skipped (the stand-in is not called twice); --dataset tabulates it alone.
    assert main([str(path), "--output-root", str(out), "--evaluate-on", "cxr_phantom_test"], fake) == 1
    assert "1/4 base seed 0: has cxr_phantom_test results, skipped" in capsys.readouterr().out
    assert len((run / "eval_on_cxr_phantom_test" / "argv.json").read_text().splitlines()) == 1
    (out / "demo" / "table_cxr_phantom_test.md").unlink()
    assert main([str(path), "--output-root", str(out), "--table-only", "--dataset", "cxr_phantom_test"], fake) == 0
    assert (out / "demo" / "table_cxr_phantom_test.md").read_text() == test_table

    assert main([str(path), "--output-root", str(out), "--evaluate-on", "cxr_phantom_tset"], fake) == 2
    assert "not a registered dataset; did you mean one of ['cxr_phantom_test'" in capsys.readouterr().err
    assert main([str(path), "--output-root", str(out), "--evaluate-on", "cxr_phantom_test", "--dry-run"], fake) == 2


@pytest.mark.slow  # starts a stand-in tools/train_net.py process per run
def test_torch_threads_reach_every_run_and_evaluation(tmp_path, in_repo, capsys, monkeypatch):
    fake = tmp_path / "fake_train_net.py"
    fake.write_text(FAKE_TRAIN_NET)
    path, out = write_study(tmp_path, TWO_ROWS), tmp_path / "out"
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert main([str(path), "--output-root", str(out), "--only", "base"], fake) == 0
    assert main([str(path), "--output-root", str(out), "--only", "better", "--torch-threads", "1"], fake) == 0
    assert main([str(path), "--output-root", str(out), "--evaluate-on", "cxr_phantom_test", "--seed", "0",
                 "--torch-threads", "2"], fake) == 0
    runs = out / "demo"
    assert (runs / "base" / "seed1" / "threads.txt").read_text() == "7,unset\n"  # inherited without the flag
    assert (runs / "better" / "seed1" / "threads.txt").read_text() == "1,1\n"
    assert (runs / "better" / "seed0" / "eval_on_cxr_phantom_test" / "threads.txt").read_text() == "2,2\n"
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as exit_info:
            main([str(path), "--torch-threads", bad], fake)
        assert exit_info.value.code == 2
        assert f"--torch-threads: expected a whole number of at least 1, got '{bad}'" in capsys.readouterr().err


# Stands in for a multi-process training (--num-gpus): starts a worker process, then waits.
SLEEPY_TRAIN_NET = textwrap.dedent('''
    import os, subprocess, sys, time
    out = sys.argv[sys.argv.index("OUTPUT_DIR") + 1]
    os.makedirs(out, exist_ok=True)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    open(os.path.join(out, "worker.pid"), "w").write(str(worker.pid))
    time.sleep(300)
''')


@pytest.mark.slow
def test_sigterm_stops_the_run_and_the_processes_it_started(tmp_path, in_repo):
    fake = tmp_path / "sleepy_train_net.py"
    fake.write_text(SLEEPY_TRAIN_NET)
    path, out = write_study(tmp_path, TWO_ROWS), tmp_path / "out"
    script = f"import sys; from cxr_codet.studies.cli import run_study_main; sys.exit(run_study_main(sys.argv[1:], {str(fake)!r}))"
    runner = subprocess.Popen([sys.executable, "-c", script, str(path), "--output-root", str(out)], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid_file = out / "demo" / "base" / "seed0" / "worker.pid"
    deadline = time.time() + 300
    while not (pid_file.is_file() and pid_file.read_text()):
        assert runner.poll() is None and time.time() < deadline, runner.communicate()
        time.sleep(0.1)
    runner.send_signal(signal.SIGTERM)
    stdout, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 130, stdout + stderr
    assert "interrupted; rerun the same command to continue" in stderr
    worker = int(pid_file.read_text())
    deadline = time.time() + 30
    while not _gone(worker):
        assert time.time() < deadline, f"worker {worker} of the interrupted run is still running"
        time.sleep(0.1)


def test_command_line_errors_exit_2_with_the_message(tmp_path, in_repo, capsys):
    path = write_study(tmp_path, "name: x\nseeds: [0]\nrows: [{name: a, config: configs/nope.yaml}]\n")
    assert main([str(path)], TRAIN_NET) == 2
    assert "error: " in capsys.readouterr().err
    good = write_study(tmp_path, TWO_ROWS, "good.yaml")
    assert main([str(good), "--output-root", str(tmp_path / "none"), "--table-only"], TRAIN_NET) == 1
    assert "no table: none of the rows ['base', 'LR 0.01'] has an evaluated run" in capsys.readouterr().err


# The slow test: a real tiny study (2 rows x 2 seeds of a small from-scratch Faster R-CNN on 64 px phantom
# images, 3 iterations each), SIGKILLed during its second run, resumed with the same command.
TINY_STUDY = f"""
    name: tiny
    base: base
    seeds: [0, 1]
    overrides: [DATASETS.TRAIN, "('cxr_phantom_tiny_train',)", DATASETS.TEST, "('cxr_phantom_tiny_val',)",
                INPUT.MIN_SIZE_TRAIN, "(64,)", INPUT.MAX_SIZE_TRAIN, 64, INPUT.MIN_SIZE_TEST, 64,
                INPUT.MAX_SIZE_TEST, 64, MODEL.FPN.OUT_CHANNELS, 32, MODEL.ROI_BOX_HEAD.FC_DIM, 64,
                MODEL.RPN.PRE_NMS_TOPK_TRAIN, 200, MODEL.RPN.POST_NMS_TOPK_TRAIN, 40,
                MODEL.RPN.PRE_NMS_TOPK_TEST, 200, MODEL.RPN.POST_NMS_TOPK_TEST, 40,
                MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE, 16, MODEL.ROI_HEADS.SCORE_THRESH_TEST, 0.0,
                SOLVER.IMS_PER_BATCH, 2, SOLVER.WARMUP_ITERS, 1, SOLVER.STEPS, "(1000,)", SOLVER.MAX_ITER, 3,
                SOLVER.CHECKPOINT_PERIOD, 1, SOLVER.LOG_PERIOD, 1, DATALOADER.NUM_WORKERS, 0]
    rows:
      - name: base
        config: {BASELINE}
      - name: lr
        label: "LR 0.005"
        config: {BASELINE}
        overrides: [SOLVER.BASE_LR, 0.005]
"""


def _gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie nobody reaps counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state


def _expected(values, confidence=0.95):
    """Mean and 95% t-interval, computed here without the package's code."""
    values = np.array([v for v in values if v is not None], dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, None
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return mean, [mean - half, mean + half]


def _check_table_against_runs(out: Path):
    data = json.loads((out / "tiny" / "table.json").read_text())
    assert data["dataset"] == "cxr_phantom_tiny_val" and data["base"] == "base"
    assert [row["name"] for row in data["rows"]] == ["base", "lr"]
    for row in data["rows"]:
        results = [json.loads((out / "tiny" / row["name"] / f"seed{s}" / "eval_results.json").read_text())
                   ["cxr_phantom_tiny_val"]["bbox"] for s in (0, 1)]
        assert row["missing"] == [] and len(row["results_files"]) == 2
        for metric in ("AP50", "APm", "APl"):
            values = [r.get(metric) for r in results]
            entry = row["metrics"][metric]
            if all(v is None for v in values):  # a size bucket without ground truth
                assert entry["n"] == 0 and entry["mean"] is None
                continue
            mean, interval = _expected(values)
            assert entry["values"] == values and entry["mean"] == pytest.approx(mean)
            assert entry["ci95"] == (None if interval is None else pytest.approx(interval))
    return data


@pytest.mark.slow
def test_tiny_study_killed_mid_way_resumes_and_tabulates_its_runs(tmp_path, in_repo):
    path = write_study(tmp_path, TINY_STUDY)
    out = tmp_path / "out"
    command = [sys.executable, "tools/run_study.py", str(path), "--output-root", str(out)]
    second = out / "tiny" / "base" / "seed1"
    with open(tmp_path / "first.log", "w") as log:
        runner = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 1800  # generous: the shared CPU can be 10x oversubscribed
    tag = second / "last_checkpoint"
    while not (tag.is_file() and tag.read_text() in ("model_0000000.pth", "model_0000001.pth")):
        assert runner.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < deadline, "the second run never wrote a checkpoint"
        time.sleep(0.1)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    assert run_state(out / "tiny" / "base" / "seed0") == "done" and run_state(second) == "resume"
    child = int((second / "study_run.log").read_text().split(" run, pid ")[1].split()[0])
    deadline = time.time() + 30
    while not _gone(child):  # the training process dies with the runner: no orphan to race the rerun
        assert time.time() < deadline, f"training process {child} outlived the killed runner"
        time.sleep(0.1)

    resumed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=3600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "4 runs: 1 done, 1 to resume, 2 to start" in resumed.stdout
    assert "1/4 base seed 0: done, skipped" in resumed.stdout
    assert "2/4 base seed 1: resuming" in resumed.stdout
    second_log = (second / "study_run.log").read_text()
    assert second_log.count("=== ") == 2 and "--resume OUTPUT_DIR" in second_log.split("=== ")[2]
    assert "[Checkpointer] Loading from" in (second / "log.txt").read_text()
    assert (out / "tiny" / "base" / "seed0" / "study_run.log").read_text().count("=== ") == 1
    _check_table_against_runs(out)
    assert (out / "tiny" / "per_class_ap50.png").stat().st_size > 5000

    # Runs this short score about 0 everywhere; give each run distinct scores and tabulate again with the
    # same command (nothing retrains), so the check cannot pass on equal numbers.
    for row_index, row in enumerate(("base", "lr")):
        for seed in (0, 1):
            file = out / "tiny" / row / f"seed{seed}" / "eval_results.json"
            results = json.loads(file.read_text())
            bbox = results["cxr_phantom_tiny_val"]["bbox"]
            bbox.update(AP50=40.0 + 10 * row_index + 3 * seed, APm=20.0 + 2 * seed - row_index)
            file.write_text(json.dumps(results))
    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 runs: 4 done, 0 to resume, 0 to start" in again.stdout
    data = _check_table_against_runs(out)
    assert data["rows"][1]["metrics"]["AP50"]["delta"] == pytest.approx(10.0)
    table = (out / "tiny" / "table.md").read_text()
    half = stats.t.ppf(0.975, 1) * np.std([40.0, 43.0], ddof=1) / math.sqrt(2)
    assert f"| base (base) | 2 | 41.5 ± {half:.1f} |" in table
    # Both t-intervals overlap, yet Welch's interval of the difference, 10 ± 9.1 (df 2), excludes 0: starred.
    # APm moves by -1 on both seeds: within Welch's interval, outside the paired one (dagger only).
    assert f"| LR 0.005 | 2 | 51.5 ± {half:.1f} (+10.0*\u2020) | 20.0 ± {2 * half / 3:.1f} (-1.0\u2020) |" in table


@pytest.mark.slow  # starts a stand-in tools/train_net.py process per run
def test_a_rows_paper_figures_show_in_the_dry_run_and_beside_its_cells(tmp_path, in_repo, capsys):
    fake = tmp_path / "fake_train_net.py"
    fake.write_text(FAKE_TRAIN_NET)
    text = TWO_ROWS.replace('        label: "LR 0.01"\n', '        label: "LR 0.01"\n        paper: {AP50: 72.4}\n')
    text += f"""
      - name: unrun
        config: {BASELINE}
        paper: {{APm: 27.5}}
    """
    path = write_study(tmp_path, text)
    out = tmp_path / "out"
    assert main([str(path), "--output-root", str(out), "--dry-run"], fake) == 0
    printed = capsys.readouterr().out
    assert "3/6 better seed 0: would start: " in printed and printed.count("; the paper reports AP50 72.4") == 2
    assert main([str(path), "--output-root", str(out), "--only", "base", "--only", "better"], fake) == 0
    table = (out / "demo" / "table.md").read_text()
    assert "In brackets: the figure the paper reports for that setting." in table
    assert "| LR 0.01 | 2 | 70.5 ± 6.4 (+10.0*\u2020) [paper 72.4] | 30.5 ± 6.4 (+0.0) |" in table
    assert "| unrun | 0 of 2 (missing: seed 0, seed 1) | missing | missing [paper 27.5] | missing |" in table
    assert json.loads((out / "demo" / "table.json").read_text())["rows"][1]["paper"] == {"AP50": 72.4}
