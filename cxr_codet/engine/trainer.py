"""`CXRTrainer`: detectron2's DefaultTrainer wired to cxr-codet's loaders, evaluators and optimizer.

Differences from DefaultTrainer: the data layer's loaders (the mapper each dataset's metadata names, the
samplers), mixed precision on any device (engine/amp.py), evaluators chosen per dataset by
`cxr_codet.evaluation.build_evaluator`, per-parameter LR multipliers, a DDP wrapper that also works on
CPU (gloo), checkpoints written atomically, a test-time vocabulary per test dataset, and every
evaluation written to `OUTPUT_DIR/eval_results.json`.
"""
import json
import logging
import os
import random
import weakref
from collections import OrderedDict

import numpy as np
import torch

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, TrainerBase, hooks
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..data.build import build_cxr_test_loader, build_cxr_train_loader
from ..evaluation import build_evaluator, write_eval_results
from ..modeling.checkpoint_init import init_from_cfg
from .amp import build_train_loop
from .checkpoint import AtomicDetectionCheckpointer
from .optimizer import build_optimizer

logger = logging.getLogger(__name__)


def random_states() -> dict:
    """This process's random generators (torch CPU and CUDA, NumPy, Python), as a checkpoint stores them: the RPN's
    and ROI heads' region sampling draws from torch's, so a resumed run repeats the uninterrupted one's draws."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_states(state: dict) -> None:
    """Restore `random_states()` (generators a checkpoint lacks are left as they are)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "python" in state:
        random.setstate(_as_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value):
    """Python's random state with its nested tuples back (a checkpoint may store them as lists)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class CXRTrainer(DefaultTrainer):
    """The trainer behind tools/train_net.py."""

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model)
        self._trainer = build_train_loop(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicDetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trust_code=cfg.MODEL.TRUST_CHECKPOINT_CODE, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def state_dict(self):
        """Iteration, hook states (LR scheduler), the optimizer state (momentum, current LRs) and, with
        SOLVER.AMP in float16, the loss scaler's state.

        detectron2 v0.6's DefaultTrainer leaves the optimizer out, so `--resume` restarted SGD
        momentum and ran its first iteration at the scheduler's initial LR; later versions save it
        under the same "_trainer" key, so checkpoints stay interchangeable.
        """
        state = super().state_dict()
        state["_trainer"] = self._trainer.state_dict()
        state["rng"] = random_states()
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logger.warning("Checkpoint has no optimizer state; SGD momentum starts from zero")
        if "rng" in state_dict:
            set_random_states(state_dict["rng"])

    def build_hooks(self):
        """DefaultTrainer's hooks, with the metric writers' period from cfg.SOLVER.LOG_PERIOD."""
        hook_list = super().build_hooks()
        for hook in hook_list:
            if isinstance(hook, hooks.PeriodicWriter):
                hook._period = self.cfg.SOLVER.LOG_PERIOD
        return hook_list

    def resume_or_load(self, resume=True):
        """Load the last checkpoint (resume) or MODEL.WEIGHTS and then MODEL.INIT.WEIGHTS; on resume,
        drop metrics.json lines of iterations that the interrupted run logged after its last
        checkpoint, so they are not doubled."""
        super().resume_or_load(resume=resume)
        sampler = getattr(self._trainer.data_loader, "batch_sampler", None)
        if self.start_iter > 0 and hasattr(sampler, "set_start_iteration"):
            sampler.set_start_iteration(self.start_iter)  # the two-stream loader continues its streams exactly
            restored = random_states()  # a new loader iterator draws its workers' seed: keep the checkpoint's state
            self._trainer.reset_data_iterator()
            set_random_states(restored)
        if not (resume and self.checkpointer.has_checkpoint()):
            # A fresh run: also start from a pretrained detector (MODEL.INIT.WEIGHTS) if one is set.
            init_from_cfg(_bare(self.model), self.cfg)
        if resume and comm.is_main_process():
            truncate_metrics(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), self.start_iter)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        """The training loader; with the two-stream loader, whether the model trains on caption batches comes from
        its meta-architecture's `trains_on_caption_stream(cfg)` (else its caption iterations read no image)."""
        architecture = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
        trains = getattr(architecture, "trains_on_caption_stream", None)
        return build_cxr_train_loader(cfg, train_caption_stream=bool(trains and trains(cfg)))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_cxr_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """The evaluators TEST.EVALUATORS_BY_DATASET lists for the dataset, else its evaluator_type's."""
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Evaluate `model` on every dataset of cfg.DATASETS.TEST and write eval_results.json.

        Models that support it (`set_test_vocabulary`) are switched to each dataset's class names
        first when cfg.MODEL.TEST_VOCABULARY_FROM_DATASET is on.
        """
        results = OrderedDict()
        bare_model = _bare(model)
        if cfg.TEST.CLASS_MAPPING and _uses_dataset_vocabulary(cfg, bare_model):
            raise ValueError(
                f"TEST.CLASS_MAPPING {cfg.TEST.CLASS_MAPPING!r} renames predictions of the training classes, but "
                f"{type(bare_model).__name__} classifies with each test dataset's own class names "
                "(MODEL.TEST_VOCABULARY_FROM_DATASET True); set one of them off"
            )
        for idx, dataset_name in enumerate(cfg.DATASETS.TEST):
            if _uses_dataset_vocabulary(cfg, bare_model):
                bare_model.set_test_vocabulary(MetadataCatalog.get(dataset_name).thing_classes)
            data_loader = cls.build_test_loader(cfg, dataset_name)
            evaluator = (
                evaluators[idx] if evaluators is not None else cls.build_evaluator(cfg, dataset_name)
            )
            results_i = inference_on_dataset(model, data_loader, evaluator)
            results[dataset_name] = results_i
            if comm.is_main_process():
                logger.info("Evaluation results for %s in csv format:", dataset_name)
                print_csv_format(results_i)
        if comm.is_main_process():
            write_eval_results(results, cfg.OUTPUT_DIR)
        if len(results) == 1:
            results = list(results.values())[0]
        return results


def truncate_metrics(path: str, start_iter: int) -> int:
    """Remove lines of detectron2's metrics.json whose "iteration" is >= start_iter; returns how many."""
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        lines = f.readlines()
    kept = [line for line in lines if not line.strip() or json.loads(line).get("iteration", -1) < start_iter]
    dropped = len(lines) - len(kept)
    if dropped:
        logger.info("Resuming at iteration %d: dropped %d later lines from %s", start_iter, dropped, path)
        with open(path, "w") as f:
            f.writelines(kept)
    return dropped


def _bare(model):
    """The model inside a DistributedDataParallel wrapper, or the model itself."""
    return model.module if hasattr(model, "module") else model


def _uses_dataset_vocabulary(cfg, model) -> bool:
    return bool(cfg.MODEL.get("TEST_VOCABULARY_FROM_DATASET", False)) and hasattr(
        model, "set_test_vocabulary"
    )


def create_ddp_model(model, **kwargs):
    """Wrap `model` in DistributedDataParallel when running distributed; CPU models get no device_ids
    (v0.6's `create_ddp_model` always passes the local rank as a CUDA device)."""
    if comm.get_world_size() == 1:
        return model
    if next(model.parameters()).device.type == "cuda":
        kwargs.setdefault("device_ids", [comm.get_local_rank()])
    kwargs.setdefault("broadcast_buffers", False)
    return DistributedDataParallel(model, **kwargs)
