"""What tools/train_net.py runs: `launch` of its processes (also on CPU, joined by gloo), and in each process
the config setup, then training or evaluation."""
import gc
import logging
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup
from detectron2.engine import launch as detectron2_launch
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..compat import apply
from ..config import add_cxr_codet_config
from ..data.samplers import check_concept_group_config
from .checkpoint import AtomicDetectionCheckpointer
from .trainer import CXRTrainer

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)


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
    """`build_cfg` from the command line, then detectron2's run setup (output folder, logs, config dump). A
    concept-group batch layout that cannot work fails here, before any data is read."""
    cfg = build_cfg(args.config_file, args.opts)
    if cfg.DATALOADER.SAMPLER_TRAIN == "ConceptGroupSampler" and not args.eval_only:
        check_concept_group_config(cfg)
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
