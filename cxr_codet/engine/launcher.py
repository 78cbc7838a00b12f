"""What tools/train_net.py runs in each process: config setup, then training or evaluation."""
import logging

import torch
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import add_cxr_codet_config
from ..modeling.checkpoint_init import check_input_normalization
from .checkpoint import AtomicDetectionCheckpointer
from .trainer import CXRTrainer

logger = logging.getLogger(__name__)


def parse_args(argv):
    """detectron2's standard arguments (--config-file, --num-gpus, --resume, --eval-only, opts ...)."""
    return default_argument_parser().parse_args(argv)


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


def setup_cfg(args):
    """`build_cfg` from the command line (normalisation checked against the weights it loads), then
    detectron2's run setup (output folder, logs, config dump)."""
    cfg = build_cfg(args.config_file, args.opts)
    check_input_normalization(cfg)
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="cxr_codet")
    return cfg


def main(args):
    """Train (optionally resuming) or, with --eval-only, evaluate MODEL.WEIGHTS."""
    cfg = setup_cfg(args)
    if args.eval_only:
        model = CXRTrainer.build_model(cfg)
        AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return CXRTrainer.test(cfg, model)

    trainer = CXRTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    if cfg.TEST.AUG.ENABLED:
        logger.warning("TEST.AUG is not supported by cxr-codet models; ignoring it")
    results = trainer.train()
    if comm.is_main_process():
        logger.info("Training finished after %d iterations", trainer.iter + 1)
    return results
