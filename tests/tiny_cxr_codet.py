"""Helpers for model tests: tiny CXR-CoDet configs (R-18, 64 px, few proposals), fixed random class embeddings,
hand-made training batches in the concept-group loader's format, tiny saved models for the demo, and the tiny
progression config."""
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch
from conftest import CONFIGS, OFFLINE_TEXT_ENCODER, TINY_MODEL, make_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from cxr_codet.data.classes import NIH_CXR14_BBOX_CLASSES, VINDR_CXR_CLASSES

VOCABULARY_DATASET = "test_cxr_codet_vindr_vocabulary"
IMAGE_SIZE = (64, 80)
LOSS_KEYS = {"loss_cls", "loss_box_reg", "loss_cooccurrence", "loss_rpn_cls", "loss_rpn_loc"}  # CXR-CoDet's


def register_vocabulary_dataset(name: str = VOCABULARY_DATASET, classes: Sequence[str] = VINDR_CXR_CLASSES) -> str:
    """Register an empty dataset whose metadata carries `classes` (the training vocabulary of test models)."""
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).thing_classes = list(classes)
    return name


def embeddings_file(directory: Path, num_classes: int = len(VINDR_CXR_CLASSES), dim: int = 16, seed: int = 0) -> str:
    """A [C, D] .npy of fixed random class embeddings (stands in for a text encoder)."""
    path = Path(directory) / f"class_embeddings_{num_classes}x{dim}_{seed}.npy"
    rng = np.random.default_rng(seed)
    np.save(path, rng.standard_normal((num_classes, dim)).astype(np.float32))
    return str(path)


def tiny_cfg(
    directory: Path,
    *,
    config_file: Optional[str] = None,
    c4: bool = False,
    group_size: Optional[int] = 2,
    embeddings: Optional[str] = "random",
    extra: Sequence = (),
):
    """A tiny CXR-CoDet config: `config_file` (default Base-CXR-CoDet-C4/FPN) + TINY_MODEL + offline text
    encoder; the training vocabulary is VinDr's 14 names with random 16-d embeddings unless `embeddings`
    is None (then the MiniLM encoder embeds the descriptions)."""
    default = CONFIGS / ("Base-CXR-CoDet-C4.yaml" if c4 else "Base-CXR-CoDet-FPN.yaml")
    overrides = list(TINY_MODEL) + list(OFFLINE_TEXT_ENCODER)
    overrides += ["DATASETS.TRAIN", (register_vocabulary_dataset(),), "MODEL.ROI_HEADS.NUM_CLASSES", 14]
    if embeddings == "random":
        overrides += ["MODEL.TEXT_ENCODER.CLASS_EMBEDDINGS_PATH", embeddings_file(directory)]
    if group_size is not None:
        overrides += ["DATALOADER.CONCEPT_GROUP_SIZE", group_size]
    cfg = make_cfg(config_file or default, *overrides, *extra, tiny=False)
    cfg.SOLVER.IMS_PER_BATCH = 2 * cfg.DATALOADER.CONCEPT_GROUP_SIZE
    return cfg


def tiny_model(directory: Path, **kwargs):
    """build_model(tiny_cfg(...)) in training mode, seeded."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg(directory, **kwargs))
    model.train()
    return model


def _instances(boxes: List[List[float]], classes: List[int]) -> Instances:
    inst = Instances(IMAGE_SIZE)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).view(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    return inst


def hand_made_batch(
    group_size: int = 2, num_groups: int = 2, no_finding: int = 0, with_concepts: bool = True, seed: int = 0
) -> List[dict]:
    """Mapped dicts as the concept-group loader yields them: `num_groups` groups of `group_size` images
    sharing finding g (plus a second finding on every other image), then `no_finding` box-less images."""
    generator = torch.Generator().manual_seed(seed)
    batch = []
    for group in range(num_groups):
        for member in range(group_size):
            classes = [group] + ([group + 5] if member % 2 else [])
            boxes = [[8.0 + 4 * k + member, 10.0, 40.0 + 6 * k, 44.0 + member] for k in range(len(classes))]
            item = {"image": torch.rand(3, *IMAGE_SIZE, generator=generator) * 255, "height": IMAGE_SIZE[0],
                    "width": IMAGE_SIZE[1], "instances": _instances(boxes, classes),
                    "image_labels": sorted(set(classes)), "file_name": f"group{group}_member{member}.png"}
            if with_concepts:
                item["concept_id"] = group
            batch.append(item)
    for k in range(no_finding):
        item = {"image": torch.rand(3, *IMAGE_SIZE, generator=generator) * 255, "height": IMAGE_SIZE[0],
                "width": IMAGE_SIZE[1], "instances": _instances([], []), "image_labels": [],
                "file_name": f"no_finding{k}.png"}
        if with_concepts:
            item["concept_id"] = -1
        batch.append(item)
    return batch


def inference_inputs(seed: int = 1) -> List[dict]:
    """One inference input at the tiny size."""
    generator = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(3, *IMAGE_SIZE, generator=generator) * 255, "height": IMAGE_SIZE[0],
             "width": IMAGE_SIZE[1]}]


NIH_NAMES = list(NIH_CXR14_BBOX_CLASSES)


def save_tiny_model(folder: Path, config_file: Path, **kwargs) -> Path:
    """Build a tiny model of `config_file` (phantom vocabulary), save its weights and config; returns the YAML."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = ["DATASETS.TRAIN", ("cxr_phantom_tiny_train",), "MODEL.TEXT_ENCODER.CACHE_DIR", str(folder / "cache")]
    cfg = tiny_cfg(folder, config_file=str(config_file), extra=extra, **kwargs)
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(folder)).save("model")
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(folder / "model.pth")
    (folder / "config.yaml").write_text(cfg.dump())
    return folder / "config.yaml"


PROGRESSION_CONFIG = "configs/phantom/progression_hyperbolic_R18_phantom_pairs.yaml"


def progression_cfg(*overrides):
    """The phantom progression config on the tiny pair splits, with small widths."""
    return make_cfg(
        PROGRESSION_CONFIG, "MODEL.PROGRESSION.HIDDEN_DIM", 32, "MODEL.PROGRESSION.EMBED_DIM", 16, *overrides,
        splits=("cxr_phantom_pairs_tiny_train", "cxr_phantom_pairs_tiny_val"),
    )
