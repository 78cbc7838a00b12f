"""What tools/train_net.py runs: the run's one config and its checks, then launch (`run_train_net`), `launch` of its
processes (also on CPU, joined by gloo), then in each process the run setup and training or evaluation (`main`)."""
import gc
import logging
import re
import sys
from datetime import timedelta
from typing import List, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import default_setup
from detectron2.engine import launch as detectron2_launch
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..compat import apply
from ..data.build import check_test_images
from .checkpoint import AtomicDetectionCheckpointer
from .startup import StartupError, build_parser, guarded, report_startup_error, run_config
from .trainer import CXRTrainer

logger = logging.getLogger(__name__)

# Errors while setting a run up (config, model, data loaders, weights) that become one-line StartupErrors.
_SETUP_ERRORS = (FileNotFoundError, KeyError, ValueError, AssertionError, OSError)
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
DEFAULT_TIMEOUT = timedelta(minutes=30)


class _PlainFormatter(logging.Formatter):
    """Wraps a formatter and removes terminal colour codes (detectron2 colours the config dumps it logs)."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return _ANSI_ESCAPE.sub("", self._inner.format(record))


def _plain_log_files(output_dir: str) -> None:
    """Make the log files of detectron2's logger free of colour codes; the console keeps its colours."""
    d2_logger = setup_logger(output_dir, distributed_rank=comm.get_rank())  # the call default_setup makes (cached)
    for handler in d2_logger.handlers:
        if getattr(handler, "stream", None) not in (sys.stdout, sys.stderr) and handler.formatter is not None:
            if not isinstance(handler.formatter, _PlainFormatter):
                handler.setFormatter(_PlainFormatter(handler.formatter))


def setup_run(args, cfg) -> None:
    """detectron2's run setup in this process (output folder, logs, config dump, seeding from cfg.SEED + rank),
    then the logged seed and torch thread count."""
    if cfg.OUTPUT_DIR:
        _plain_log_files(cfg.OUTPUT_DIR)
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="cxr_codet")
    logger.info("SEED %d, torch CPU threads: %d (OMP_NUM_THREADS); on CPU a run with a fixed SEED repeats exactly "
                "only at the same thread count", cfg.SEED, torch.get_num_threads())


def main(args, cfg):
    """Train (optionally resuming) or, with --eval-only, evaluate MODEL.WEIGHTS, with the run's config `cfg`
    (built once by `run_train_net`). Errors while setting up (model, loaders with their image check, weights) are
    raised as one-line `StartupError`s."""
    try:
        setup_run(args, cfg)
        if args.eval_only:
            model = CXRTrainer.build_model(cfg)
            AtomicDetectionCheckpointer(
                model, save_dir=cfg.OUTPUT_DIR, trust_code=cfg.MODEL.TRUST_CHECKPOINT_CODE
            ).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        else:
            trainer = CXRTrainer(cfg)
            trainer.resume_or_load(resume=args.resume)
        check_test_images(cfg)  # now, not when the first evaluation builds the test loader
    except _SETUP_ERRORS as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise StartupError(message or type(e).__name__) from e
    if args.eval_only:
        return CXRTrainer.test(cfg, model)
    if cfg.TEST.AUG.ENABLED:
        logger.warning("TEST.AUG is not supported by cxr-codet models; ignoring it")
    results = trainer.train()
    if comm.is_main_process():
        logger.info("Training finished after %d iterations", trainer.iter)
    return results


def run_train_net(argv: Optional[List[str]] = None) -> int:
    """tools/train_net.py: parse, build and check the run's config once (`startup.run_config`), launch `main` with
    it in --num-gpus processes; returns the exit status (2 for start-up errors, printed as one line unless
    --debug)."""
    args = build_parser().parse_args(argv)
    try:
        cfg = run_config(args)
    except StartupError as e:
        if args.debug:
            raise
        report_startup_error(e)
        return 2
    try:
        launch(guarded, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(main, args, cfg))
    except SystemExit as e:  # one process (run in this one) stopped at start-up and said why
        return e.code
    except mp.ProcessExitedException as e:  # a spawned process stopped at start-up and said why
        return e.exit_code or 1
    return 0


def launch(
    main_func,
    num_gpus_per_machine,
    num_machines=1,
    machine_rank=0,
    dist_url=None,
    args=(),
    timeout=DEFAULT_TIMEOUT,
):
    """detectron2's `launch()`, also on machines without a GPU.

    With CUDA this is detectron2's own `launch` (NCCL). Without it, v0.6's `launch` asserts CUDA, so
    we spawn `num_gpus_per_machine` CPU processes joined by gloo and set up the same local process
    group detectron2's `comm` expects. The argument keeps detectron2's name: on CPU it counts processes.
    """
    if torch.cuda.is_available():
        return detectron2_launch(
            main_func,
            num_gpus_per_machine,
            num_machines=num_machines,
            machine_rank=machine_rank,
            dist_url=dist_url,
            args=args,
            timeout=timeout,
        )
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        return main_func(*args)
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("dist_url=auto is only supported with --num-machines 1")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    mp.spawn(
        _cpu_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
    )


def _cpu_worker(
    local_rank, main_func, world_size, procs_per_machine, machine_rank, dist_url, args, timeout
):
    apply()  # spawned processes start from a fresh interpreter
    global_rank = machine_rank * procs_per_machine + local_rank
    dist.init_process_group(
        backend="gloo", init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout
    )
    if hasattr(comm, "create_local_process_group"):  # detectron2 after v0.6
        comm.create_local_process_group(procs_per_machine)
    else:
        num_machines = world_size // procs_per_machine
        for i in range(num_machines):
            group = dist.new_group(list(range(i * procs_per_machine, (i + 1) * procs_per_machine)))
            if i == machine_rank:
                comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()
    main_func(*args)
    _leave_process_groups(comm)


def _leave_process_groups(comm) -> None:
    """Leave together and free every gloo group before the interpreter exits: a gloo group whose last
    reference dies during interpreter shutdown (detectron2's comm caches one) can abort the process in
    its C++ destructor ("terminate called without an active exception")."""
    comm.synchronize()
    dist.destroy_process_group()  # all groups, the default one included
    if hasattr(comm._get_global_gloo_group, "cache_clear"):
        comm._get_global_gloo_group.cache_clear()
    comm._LOCAL_PROCESS_GROUP = None
    gc.collect()
