"""The processes of a study: one training (or evaluation) subprocess per run, its output appended to the run's
study_run.log with its progress reported, stopped with everything it started when the runner is interrupted,
and a per-run lock so that several runners of one study share its runs instead of racing on one."""
import ctypes
import fcntl
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

from .layout import RUN_LOG
from .plan import PlannedRun

LOCK_FILE = ".study_lock"
_ITER = re.compile(r"\biter: (\d+)")
PROGRESS_PERIOD_S = 30.0


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGKILL it when the runner dies, so a killed study leaves no orphan
    training that a rerun would race with (elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_environment(torch_threads: Optional[int] = None) -> dict:
    """The environment of a run's process: unbuffered output and, with `torch_threads`, torch's CPU thread count
    (OMP_NUM_THREADS, MKL_NUM_THREADS); on CPU a seed repeats a run exactly only at the same thread count."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if torch_threads is not None:
        env.update(OMP_NUM_THREADS=str(torch_threads), MKL_NUM_THREADS=str(torch_threads))
    return env


def execute(run: PlannedRun, say: Callable[[str], None], prefix: str, torch_threads: Optional[int] = None) -> int:
    """Run one training subprocess, its output appended to <run>/study_run.log; report its iteration every
    PROGRESS_PERIOD_S seconds; return its exit status. The run gets its own process group, so an interrupted
    runner stops it together with the processes it started (--num-gpus)."""
    run.output_dir.mkdir(parents=True, exist_ok=True)
    with open(run.output_dir / RUN_LOG, "a") as log:
        process = subprocess.Popen(run.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   bufsize=1, preexec_fn=_die_with_parent, start_new_session=True,
                                   env=run_environment(torch_threads))
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {run.state} run, pid {process.pid}\n"
                  f"$ {shlex.join(run.command)}\n")
        log.flush()
        last_report = time.monotonic()
        try:
            for line in process.stdout:
                log.write(line)
                log.flush()
                match = _ITER.search(line)
                if match and time.monotonic() - last_report >= PROGRESS_PERIOD_S:
                    say(f"{prefix}   iteration {int(match.group(1)) + 1}/{run.max_iter}")
                    last_report = time.monotonic()
            return process.wait()
        except BaseException:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
            raise


def log_tail(path: Path, lines: int = 15) -> str:
    return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])


@contextmanager
def run_lock(output_dir: Path):
    """Hold <run>/.study_lock (flock) while the run trains; yields False when another runner holds it, so
    several runners of one study share its runs instead of racing on one. The lock goes with the runner."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / LOCK_FILE, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
