"""What tools/train_net.py runs: checks and launch (`run_train_net`), then in each process config setup and
training or evaluation (`main`)."""
import logging
import re
import sys
from typing import List, Optional

import torch
import torch.multiprocessing as mp
import yaml
from detectron2.config import get_cfg
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..compat import launch
from ..config import add_cxr_codet_config
from ..data.build import check_test_images
from .checkpoint import AtomicDetectionCheckpointer
from .startup import StartupError, build_parser, check_config_file, check_datasets, config_error, guarded
from .startup import report_startup_error
from .trainer import CXRTrainer

logger = logging.getLogger(__name__)

# Errors while setting a run up (config, model, data loaders, weights) that become one-line StartupErrors.
_SETUP_ERRORS = (FileNotFoundError, KeyError, ValueError, AssertionError, OSError)
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def build_cfg(config_file, opts=(), cpu=False):
    """The frozen config from defaults, cxr-codet's keys, the YAML file and trailing KEY VALUE overrides.

    A misspelt key in the file or the overrides fails here with detectron2's "Non-existent config
    key" error naming it. The model runs on CPU when `cpu` is set or CUDA is absent.
    """
    cfg = get_cfg()
    add_cxr_codet_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if cpu or not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


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


def setup_cfg(args):
    """`build_cfg` from the command line, then detectron2's run setup (output folder, logs, config dump)."""
    cfg = build_cfg(args.config_file, args.opts)
    if cfg.OUTPUT_DIR:
        _plain_log_files(cfg.OUTPUT_DIR)
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="cxr_codet")
    return cfg


def main(args):
    """Train (optionally resuming) or, with --eval-only, evaluate MODEL.WEIGHTS. Errors while setting up (config,
    model, loaders with their image check, weights) are raised as one-line `StartupError`s."""
    try:
        cfg = setup_cfg(args)
        if args.eval_only:
            model = CXRTrainer.build_model(cfg)
            AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
                cfg.MODEL.WEIGHTS, resume=args.resume
            )
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
    """tools/train_net.py: parse, check the config and datasets, launch `main` in --num-gpus processes; returns
    the exit status (2 for start-up errors, printed as one line unless --debug)."""
    args = build_parser().parse_args(argv)
    try:
        check_config_file(args.config_file)
        try:
            cfg = build_cfg(args.config_file, args.opts)
        except (KeyError, ValueError, AssertionError, TypeError, yaml.YAMLError) as e:
            defaults = get_cfg()
            add_cxr_codet_config(defaults)
            raise config_error(e, defaults) from e
        check_datasets(cfg)
    except StartupError as e:
        if args.debug:
            raise
        report_startup_error(e)
        return 2
    try:
        launch(guarded, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(main, args))
    except SystemExit as e:  # one process (run in this one) stopped at start-up and said why
        return e.code
    except mp.ProcessExitedException as e:  # a spawned process stopped at start-up and said why
        return e.exit_code or 1
    return 0
