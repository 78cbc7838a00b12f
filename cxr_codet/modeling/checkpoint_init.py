"""Initialise CXR-CoDet from a pretrained detector: detectron2 (.pth/.pkl, incl. Detectron1/Caffe2), Detic or CoDet.

The checkpoint's keys are renamed onto our model (RENAME_RULES), compared with the model's state dict,
and only tensors whose name and shape both match are loaded. The result is a report of matched, missing,
unexpected, shape-mismatched and deliberately dropped keys (logged as a table and returned), after which
named modules can be re-initialised (the paper resets the similarity mechanism and MLP when starting
from Detic weights). Vocabulary buffers of the source detector are never loaded: our class embeddings
come from our own text encoder.
"""
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts
from fvcore.common.checkpoint import get_missing_parameters_message, get_unexpected_parameters_message
from tabulate import tabulate
from torch import nn

from ..safe_checkpoint import detectron2_layout, load_checkpoint_file, trust_checkpoint_code

logger = logging.getLogger(__name__)

CASCADE_KEY = re.compile(r"^roi_heads\.(box_head|box_predictor)\.(\d+)\.(.*)$")

# Ordered (pattern, replacement or None, why) applied to every checkpoint key after cascade-stage selection;
# the first matching rule wins. None drops the key with the reason.
RENAME_RULES: List[Tuple[re.Pattern, Optional[str], str]] = [
    (re.compile(r"^roi_heads\.box_predictor\.cls_score\.linear\.(weight|bias)$"),
     r"roi_heads.box_predictor.cls_score.proj.\1", "Detic/CoDet region-to-text projection"),
    (re.compile(r"^roi_heads\.box_predictor\.cls_score\.(zs_weight|detection_weight|class_embeddings)$"), None,
     "source detector's vocabulary (class embeddings come from our text encoder)"),
    (re.compile(r"^roi_heads\.box_predictor\.freq_weight$"), None,
     "Detic's class frequencies of its own vocabulary (federated loss / ignored zero-shot classes)"),
    (re.compile(r"^roi_heads\.box_predictor\.cls_score\.(weight|bias)$"), None,
     "closed-vocabulary classifier (replaced by the text-embedding classifier)"),
    (re.compile(r"^roi_heads\.box_predictor\.(fc1|fc2)\.(weight|bias)$"),
     r"roi_heads.co_occurrence.sim_mlp.\1.\2", "CoDet similarity MLP"),
    (re.compile(r"^roi_heads\.box_predictor\.weight_transform\.\d+\.(weight|bias)$"), None,
     "CoDet alias of the similarity MLP (loaded from fc1/fc2)"),
    (re.compile(r"^text_encoder\."), None,
     "Detic/CoDet's frozen CLIP text encoder for captions (class embeddings come from our text encoder)"),
    (re.compile(r"(^|\.)pixel_(mean|std)$"), None, "input normalisation comes from the config"),
    (re.compile(r"anchor_generator\.cell_anchors"), None, "anchors are rebuilt from the config"),
    (re.compile(r"num_batches_tracked$"), None, "BatchNorm step counter"),
]


@dataclass
class InitReport:
    """What loading a checkpoint did; `as_dict()` gives plain lists/dicts for logs and tests."""

    path: str
    layout: str
    matched: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shape_mismatched: Dict[str, Tuple[tuple, tuple]] = field(default_factory=dict)
    dropped: Dict[str, str] = field(default_factory=dict)
    renamed: Dict[str, str] = field(default_factory=dict)
    reinitialized: List[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "layout": self.layout,
            "matched": list(self.matched),
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "shape_mismatched": dict(self.shape_mismatched),
            "dropped": dict(self.dropped),
            "renamed": dict(self.renamed),
            "reinitialized": list(self.reinitialized),
        }

    def table(self) -> str:
        """Counts per category, then the grouped key lists that need a reader's attention."""
        rows = [
            ("matched (loaded)", len(self.matched)),
            ("missing (kept at init)", len(self.missing)),
            ("unexpected (ignored)", len(self.unexpected)),
            ("shape mismatch (ignored)", len(self.shape_mismatched)),
            ("dropped on purpose", len(self.dropped)),
            ("renamed", len(self.renamed)),
            ("re-initialised modules", len(self.reinitialized)),
        ]
        parts = [
            f"Initialised from {self.path} ({self.layout} layout):",
            tabulate(rows, headers=["keys", "count"], tablefmt="pipe"),
        ]
        if self.shape_mismatched:
            shapes = [(k, str(a), str(b)) for k, (a, b) in sorted(self.shape_mismatched.items())]
            parts.append(tabulate(shapes, headers=["shape mismatch", "checkpoint", "model"], tablefmt="pipe"))
        if self.missing:
            parts.append(get_missing_parameters_message(self.missing))
        if self.unexpected:
            parts.append(get_unexpected_parameters_message(self.unexpected))
        if self.reinitialized:
            parts.append("Re-initialised: " + ", ".join(self.reinitialized))
        return "\n".join(parts)


def _is_codet(keys: Sequence[str]) -> bool:
    return any(".box_predictor.fc1." in k or ".weight_transform." in k or k.endswith("detection_weight") for k in keys)


def _is_detic(keys: Sequence[str]) -> bool:
    return any(".cls_score.linear." in k or k.endswith("zs_weight") for k in keys)


def _is_cxr_codet(keys: Sequence[str]) -> bool:
    return any(".cls_score.proj." in k or ".co_occurrence.sim_mlp." in k for k in keys)


# Layout name -> predicate over checkpoint keys; the first that holds names the layout (reporting only).
LAYOUTS: Dict[str, Callable[[Sequence[str]], bool]] = {
    "cxr_codet": _is_cxr_codet,
    "codet": _is_codet,
    "detic": _is_detic,
    "detectron2": lambda keys: True,
}


def read_checkpoint(path: str, trust_code: bool = False) -> Tuple[Dict[str, torch.Tensor], bool]:
    """The state dict in a checkpoint file, and whether its names are Detectron1/Caffe2's (need heuristics).

    .pkl: detectron2 model-zoo pickles ({"model": ..., "__author__": ...}) or Detectron1/Caffe2 blobs.
    .pth/.pt: {"model": state_dict, ...} (detectron2, Detic, CoDet) or a raw state dict. Read safely
    (cxr_codet/safe_checkpoint.py): a file that would run code is refused unless `trust_code`.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MODEL.INIT.WEIGHTS: checkpoint {path} does not exist")
    data = detectron2_layout(path, load_checkpoint_file(path, trust_code=trust_code))
    state, c2_names = data["model"], data.get("__author__") == "Caffe2"
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path}: found no state dict (a 'model' entry or a dict of tensors)")
    converted = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor or array")
        converted[key] = value
    return converted, c2_names


def _select_cascade_stage(state: Dict[str, torch.Tensor], stage: int, report: InitReport) -> Dict[str, torch.Tensor]:
    """Keep one cascade stage of box head/predictor keys, renamed to the single-stage names."""
    stages = sorted({int(m.group(2)) for m in map(CASCADE_KEY.match, state) if m})
    if not stages:
        return state
    if stage not in stages:
        raise ValueError(
            f"MODEL.INIT.CASCADE_STAGE = {stage}, but {report.path} has cascade stages {stages}"
        )
    selected = {}
    for key, value in state.items():
        match = CASCADE_KEY.match(key)
        if match is None:
            selected[key] = value
        elif int(match.group(2)) == stage:
            new_key = f"roi_heads.{match.group(1)}.{match.group(3)}"
            report.renamed[key] = new_key
            selected[new_key] = value
        else:
            report.dropped[key] = f"cascade stage {match.group(2)} (using stage {stage})"
    return selected


def _apply_rename_rules(state: Dict[str, torch.Tensor], report: InitReport) -> Dict[str, torch.Tensor]:
    """RENAME_RULES on every key; `report.renamed` maps original checkpoint keys to their final names."""
    original = {new: old for old, new in report.renamed.items()}  # keys already renamed by stage selection
    mapped = {}
    for key, value in state.items():
        source_key = original.get(key, key)
        new_key = key
        for pattern, replacement, reason in RENAME_RULES:
            if pattern.search(key):
                if replacement is None:
                    report.dropped[source_key] = reason
                    report.renamed.pop(source_key, None)
                    new_key = None
                else:
                    new_key = pattern.sub(replacement, key)
                    report.renamed[source_key] = new_key
                break
        if new_key is not None:
            mapped[new_key] = value
    return mapped


def reinitialize_modules(model: nn.Module, substrings: Sequence[str]) -> List[str]:
    """Reset every outermost module whose qualified name contains one of `substrings`; returns their names.

    A module's own `reset_parameters` is used where it has one (CoOccurrenceHead keeps CoDet's init),
    otherwise its children are reset recursively. A substring that names no module is an error.
    """
    names = [name for name, _ in model.named_modules() if name]
    reset: List[str] = []
    for substring in substrings:
        hits = [n for n in names if substring in n]
        if not hits:
            top = sorted({n.split(".")[0] for n in names})
            raise ValueError(
                f"MODEL.INIT.REINIT_MODULES entry {substring!r} matches no module of the model "
                f"(top-level modules: {top})"
            )
        reset.extend(hits)
    outermost = [n for n in dict.fromkeys(reset) if not any(n.startswith(o + ".") for o in reset if o != n)]
    modules = dict(model.named_modules())
    for name in outermost:
        _reset_recursively(modules[name])
    return outermost


def _reset_recursively(module: nn.Module) -> None:
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
        return
    for child in module.children():
        _reset_recursively(child)


def load_detector_checkpoint(
    model: nn.Module, path: str, *, cascade_stage: int = 0, reinit_modules: Sequence[str] = (), trust_code: bool = False
) -> InitReport:
    """Map the checkpoint at `path` onto `model`, load what matches, re-initialise `reinit_modules`; `trust_code`:
    see `read_checkpoint`."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    state, c2_names = read_checkpoint(path, trust_code=trust_code)
    model_state = model.state_dict()
    if c2_names:
        state = align_and_update_state_dicts(model_state, state, c2_conversion=True)
    layout = "detectron1/caffe2" if c2_names else next(n for n, test in LAYOUTS.items() if test(list(state)))
    report = InitReport(path=path, layout=layout)
    state = _select_cascade_stage(state, cascade_stage, report)
    state = _apply_rename_rules(state, report)
    to_load = {}
    for key, value in state.items():
        if key not in model_state:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(model_state[key].shape):
            report.shape_mismatched[key] = (tuple(value.shape), tuple(model_state[key].shape))
        else:
            to_load[key] = value.to(model_state[key].dtype)
    report.matched = sorted(to_load)
    report.missing = sorted(k for k in model_state if k not in to_load and k not in report.shape_mismatched)
    report.unexpected.sort()
    model.load_state_dict(to_load, strict=False)
    if reinit_modules:
        report.reinitialized = reinitialize_modules(model, reinit_modules)
    logger.info(report.table())
    return report


def init_from_cfg(model: nn.Module, cfg) -> Optional[InitReport]:
    """Apply cfg.MODEL.INIT (WEIGHTS, CASCADE_STAGE, REINIT_MODULES) to `model`; None when WEIGHTS is empty.

    Call after building the model (and after MODEL.WEIGHTS, e.g. ImageNet backbone weights, are loaded),
    and not when resuming: a resumed checkpoint already holds these weights.
    """
    init = cfg.MODEL.INIT
    if not init.WEIGHTS:
        if init.REINIT_MODULES:
            reinitialize_modules(getattr(model, "module", model), init.REINIT_MODULES)
        return None
    return load_detector_checkpoint(
        model, init.WEIGHTS, cascade_stage=init.CASCADE_STAGE, reinit_modules=init.REINIT_MODULES,
        trust_code=trust_checkpoint_code(cfg),
    )
