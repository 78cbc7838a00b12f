"""The command line of tools/train_net.py: help text, checks before any process starts, and start-up errors as
one line a user can act on (exit status 2, no traceback unless --debug).

Checked before launching: the config file (closest names under configs/ for a wrong path), config keys and
values (closest key for a misspelling), and DATASETS.TRAIN/TEST (closest registered names, CXR datasets first).
Errors while building the model, data loaders (e.g. bad images) or loading weights become `StartupError`s in
`launcher.main`; errors during training keep their traceback. `launcher.run_train_net` puts it together.
"""
import argparse
import difflib
import sys
from pathlib import Path
from typing import Iterable, List

import yaml
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser

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


def config_error(error: Exception, cfg) -> StartupError:
    """A StartupError for a failed merge of the YAML or the overrides (yacs' message, plus the closest key)."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    if isinstance(error, yaml.YAMLError):
        message = f"the config file is not valid YAML: {' '.join(str(error).split())}"
    key = message.rsplit(": ", 1)[-1].strip() if "Non-existent" in message else None
    if key:
        close = difflib.get_close_matches(key, list(_config_keys(cfg)), n=1, cutoff=0.7)
        if close:
            message += f"; did you mean {close[0]}?"
    return StartupError(message)


def _config_keys(node, prefix: str = "") -> Iterable[str]:
    for name, value in node.items():
        if isinstance(value, dict):
            yield from _config_keys(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


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


def guarded(main_func, args) -> object:
    """Run `main_func(args)` in a training process; a StartupError prints one line and exits with status 2."""
    try:
        return main_func(args)
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
