"""The command line of tools/train_net.py: help text, checks before any process starts, and start-up errors as
one line a user can act on (exit status 2, no traceback unless --debug).

Checked before launching (`run_config`, which builds the run's one config): the config file (closest names under
configs/ for a wrong path), config keys and values (closest key for a misspelling), and the checks that span
components (`check_run_config`: DATASETS.TRAIN/TEST with the closest registered names, CXR datasets first, the
input normalisation the weights expect, image-level-only images, the concept-group batch layout). Errors while
building the model, data loaders (e.g. bad images) or loading weights become `StartupError`s in `launcher.main`;
errors during training keep their traceback. `launcher.run_train_net` puts it together.
"""
import argparse
import difflib
import sys
from pathlib import Path
from typing import List

import yaml
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser
from detectron2.modeling import META_ARCH_REGISTRY

from ..config import build_cfg
from ..data.samplers import check_concept_group_layout
from ..data.streams import check_two_stream_config
from ..modeling.input_normalization import check_input_normalization

PROG = "train_net.py"
REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"

DESCRIPTION = """\
Train or evaluate a cxr-codet model (Faster R-CNN baselines, CXR-CoDet, AFLoc, grounding, image heads) with
detectron2's command line: a YAML config (configs/), then KEY VALUE overrides.

Without CUDA it runs on CPU, and --num-gpus N then starts N CPU processes joined by gloo (the same
per-process batch split as N GPUs). Outputs (checkpoints, log.txt, metrics.json, eval_results.json) go to
OUTPUT_DIR; --resume continues from its last checkpoint.

Start-up problems (no or wrong config file, misspelt key or dataset name, missing weights, missing or broken
images) print one line and exit with status 2; --debug shows the traceback instead."""

EXAMPLES = """\
examples:
  python tools/train_net.py --config-file configs/phantom/faster_rcnn_R18_FPN_phantom.yaml
  python tools/train_net.py --config-file configs/nih/cxr_codet_R50_FPN_nih.yaml --num-gpus 2
  python tools/train_net.py --config-file X.yaml --eval-only MODEL.WEIGHTS output/model_final.pth
  python tools/train_net.py --config-file X.yaml --resume
  python tools/train_net.py --config-file X.yaml DATALOADER.SKIP_BAD_IMAGES True   # skip broken images
"""


class StartupError(RuntimeError):
    """The run cannot start; the message says what to change."""


def build_parser() -> argparse.ArgumentParser:
    """detectron2's standard arguments with this tool's description, plus --debug."""
    parser = default_argument_parser(epilog=EXAMPLES)
    parser.prog = PROG
    parser.description = DESCRIPTION
    for action in parser._actions:
        if action.dest == "num_gpus":
            action.help = "GPUs per machine; without CUDA, the number of CPU processes (joined by gloo)"
    parser.add_argument("--debug", action="store_true", help="show the full traceback of start-up errors")
    return parser


def check_config_file(config_file: str) -> None:
    """A StartupError unless `config_file` names an existing file (with the closest provided configs)."""
    if not config_file:
        raise StartupError(
            "no --config-file given; pass one of the configs under configs/, e.g. "
            "--config-file configs/phantom/faster_rcnn_R18_FPN_phantom.yaml"
        )
    if Path(config_file).is_file():
        return
    known = [str(p.relative_to(REPO_CONFIGS.parent)) for p in sorted(REPO_CONFIGS.rglob("*.yaml"))]
    close = difflib.get_close_matches(config_file, known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; the provided configs are under configs/"
    raise StartupError(f"config file {config_file!r} does not exist{hint}")


def config_error(error: Exception) -> StartupError:
    """A StartupError for a failed merge of the YAML or the overrides (yacs' message, with build_cfg's closest
    key for a misspelt one)."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    if isinstance(error, yaml.YAMLError):
        message = f"the config file is not valid YAML: {' '.join(str(error).split())}"
    return StartupError(message)


def run_config(args):
    """The run's one config: the config file checked, built with the overrides (SEED resolved) and checked by
    `check_run_config`; every problem is a StartupError."""
    check_config_file(args.config_file)
    try:
        cfg = build_cfg(args.config_file, args.opts)
    except (KeyError, ValueError, AssertionError, TypeError, yaml.YAMLError) as e:
        raise config_error(e) from e
    try:
        check_run_config(cfg, training=not args.eval_only, world_size=args.num_gpus * args.num_machines)
    except ValueError as e:
        raise StartupError(str(e)) from e
    return cfg


def check_run_config(cfg, training: bool, world_size: int = 1) -> None:
    """The checks that span components, made once before any process starts or any data is read: registered
    datasets, the input normalisation the weights expect, and in training whether the model can learn from
    image-level-only images and whether the concept-group batch layout fits the processes. Each component checks
    its own settings in its from_config."""
    check_datasets(cfg)
    check_input_normalization(cfg)
    if training:
        check_image_level_only_support(cfg)
        if cfg.DATALOADER.SAMPLER_TRAIN == "ConceptGroupSampler":
            check_concept_group_layout(cfg, world_size)
        elif cfg.DATALOADER.SAMPLER_TRAIN == "TwoStreamSampler":
            check_two_stream_config(cfg, world_size)


def check_image_level_only_support(cfg) -> None:
    """Refuse to keep image-level-only training images for a meta-architecture that would read their missing boxes
    as background (any without a true `trains_on_image_level_only` attribute, e.g. Faster R-CNN)."""
    # the two-stream loader puts image-level-only images in the caption stream, never under box losses
    keeps = (cfg.DATASETS.TRAIN_BOX_FRACTION < 1.0 and not cfg.DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY
             and cfg.DATALOADER.SAMPLER_TRAIN != "TwoStreamSampler")
    architecture = cfg.MODEL.META_ARCHITECTURE
    if keeps and not getattr(META_ARCH_REGISTRY.get(architecture), "trains_on_image_level_only", False):
        raise ValueError(
            f"DATASETS.TRAIN_BOX_FRACTION = {cfg.DATASETS.TRAIN_BOX_FRACTION} keeps image-level-only images, "
            f"which {architecture} would train on as if they had no lesion; set "
            "DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY True (it then trains on the box-annotated images only) or use "
            "MODEL.META_ARCHITECTURE 'CXRCoDet'"
        )


def cxr_dataset_names() -> List[str]:
    """Registered datasets that are not detectron2's COCO/LVIS/Cityscapes/VOC built-ins."""
    return [n for n in DatasetCatalog.list() if not getattr(DatasetCatalog[n], "__module__", "").startswith("detectron2")]


def check_datasets(cfg) -> None:
    """A StartupError naming each unregistered dataset of DATASETS.TRAIN/TEST with the closest registered ones."""
    registered = set(DatasetCatalog.list())
    cxr = cxr_dataset_names()
    others = sorted(registered - set(cxr))
    for key, names in (("DATASETS.TRAIN", cfg.DATASETS.TRAIN), ("DATASETS.TEST", cfg.DATASETS.TEST)):
        for name in names:
            if name in registered:
                continue
            close = difflib.get_close_matches(name, cxr, n=3, cutoff=0.5)
            close += difflib.get_close_matches(name, others, n=3 - len(close), cutoff=0.7) if len(close) < 3 else []
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise StartupError(
                f"{key}: dataset {name!r} is not registered; {hint}CXR datasets: {', '.join(cxr)}. To use your own, "
                "register it with cxr_codet.data.datasets.coco_cxr.register_cxr_coco before training starts "
                "(README 'Train on your own data')"
            )


def guarded(main_func, args, *main_args) -> object:
    """Run `main_func(args, *main_args)` in a training process; a StartupError prints one line and exits with
    status 2."""
    try:
        return main_func(args, *main_args)
    except StartupError as e:
        if args.debug:
            raise
        report_startup_error(e)
        raise SystemExit(2) from None


def report_startup_error(error: Exception) -> None:
    """Print the one-line message (on stderr, once even with several processes)."""
    from detectron2.utils import comm

    if comm.get_rank() == 0:
        print(f"{PROG}: error: {error}", file=sys.stderr, flush=True)
