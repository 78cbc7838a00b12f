"""The shipped config files: each says only what it is about (no key restated at the value it inherits), every
one builds and passes a run's start-up checks (fast), the paper setting and its ablations are what the paper says,
normalisation follows the weights, and the two CXR-CoDet bases train two iterations (slow)."""
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIGS, make_cfg
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from tiny_cxr_codet import LOSS_KEYS, hand_made_batch, tiny_cfg

from cxr_codet.config import CfgNode
from cxr_codet.engine.optimizer import build_optimizer
from cxr_codet.engine.startup import check_run_config
from cxr_codet.modeling.input_normalization import check_input_normalization, expected_input_normalization

ALL_CONFIGS = sorted(CONFIGS.rglob("*.yaml"))
PAPER_CONFIG = CONFIGS / "vindr" / "cxr_codet_R50_C4_paper.yaml"
ABLATIONS = sorted((CONFIGS / "vindr" / "ablations").glob("*.yaml"))
BASES = [CONFIGS / "Base-CXR-CoDet-C4.yaml", CONFIGS / "Base-CXR-CoDet-FPN.yaml"]


def config_id(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


def inherited_cfg(path: Path) -> CfgNode:
    """The config `path` starts from: the defaults, then its _BASE_ chain."""
    base = yaml.safe_load(path.read_text()).get("_BASE_")
    return make_cfg(path.parent / base if base else None, tiny=False)


def leaves(tree: dict, prefix=()):
    """(key path, value) of every leaf of a nested YAML mapping."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def lookup(cfg: CfgNode, keys):
    for key in keys:
        cfg = cfg[key]
    return cfg


def restatements(path: Path):
    """Dotted keys that `path` sets to the value they already have before it is merged (VERSION excepted:
    detectron2 warns about a config file without it)."""
    own = yaml.safe_load(path.read_text())
    own.pop("_BASE_", None)
    own.pop("VERSION", None)
    before = inherited_cfg(path)
    after = before.clone()
    after.merge_from_other_cfg(CfgNode(own))
    return [".".join(keys) for keys, _ in leaves(own) if lookup(after, keys) == lookup(before, keys)]


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=config_id)
def test_config_sets_no_key_to_the_value_it_inherits(path):
    assert restatements(path) == []


def test_a_restated_key_is_found(tmp_path):
    (tmp_path / "base.yaml").write_text("SOLVER:\n  BASE_LR: 0.5\n")
    (tmp_path / "child.yaml").write_text('_BASE_: "base.yaml"\nSOLVER:\n  BASE_LR: 0.5\n  MAX_ITER: 10\n'
                                         "INPUT:\n  MIN_SIZE_TRAIN: (800,)\n")
    assert restatements(tmp_path / "child.yaml") == ["SOLVER.BASE_LR", "INPUT.MIN_SIZE_TRAIN"]


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=config_id)
def test_config_builds_and_passes_the_start_up_checks(path):
    cfg = make_cfg(path, "SEED", 0, tiny=False)
    check_run_config(cfg, training=True)
    assert cfg.OUTPUT_DIR != "./output" or path.name.startswith("Base-"), "a runnable config names its OUTPUT_DIR"


def _load(path: Path):
    return make_cfg(path, "SEED", 0, tiny=False)


def _flatten(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_paper_config_is_the_paper_setting():
    cfg = _load(PAPER_CONFIG)
    assert cfg.MODEL.META_ARCHITECTURE == "CXRCoDet" and cfg.MODEL.ROI_HEADS.NAME == "CXRCoDetRes5ROIHeads"
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == (32, 90000, (60000, 80000))
    assert cfg.SOLVER.BASE_LR == 0.001 and cfg.MODEL.CO_OCCURRENCE.LR_MULTIPLIER == 0.1 and not cfg.SOLVER.LR_MULTIPLIERS
    assert cfg.DATALOADER.CONCEPT_GROUP_SIZE == 2 and cfg.MODEL.CO_OCCURRENCE.NUM_PROPOSALS == 32
    assert cfg.MODEL.TEXT_ENCODER.NAME.endswith("BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
    assert cfg.MODEL.PROMPTS.GRANULARITY == "elaborate"
    assert tuple(cfg.DATASETS.TRAIN) == ("vindr_cxr_train",) and tuple(cfg.DATASETS.TEST) == ("vindr_cxr_val",)
    # Where the paper is silent, CoDet_OVCOCO_R50_1x.yaml (the checkpoint's config): sigmoid CE, 800 px, clipping.
    assert cfg.MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (800,) and cfg.INPUT.MAX_SIZE_TRAIN == 1333
    assert cfg.SOLVER.CLIP_GRADIENTS.ENABLED and cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 1.0
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 4  # the paper's frozen ResNet-50: the whole C4 backbone
    assert cfg.DATALOADER.CONCEPT_SAMPLING == "uniform"  # the released code's concept sampler
    # The released config's two streams (CoDet_VindrCXR_R50_1x.yaml) and caption loss (WITH_CAPTION).
    assert cfg.DATALOADER.SAMPLER_TRAIN == "TwoStreamSampler" and list(cfg.DATALOADER.DATASET_RATIO) == [1, 4]
    assert list(cfg.DATALOADER.DATASET_BS) == [2, 8]
    assert [list(s) for s in cfg.DATALOADER.DATASET_MIN_SIZES] == [[800], [400]]
    assert list(cfg.DATALOADER.DATASET_MAX_SIZES) == [1333, 667]
    assert cfg.MODEL.CAPTION_LOSS.ENABLED and cfg.MODEL.CAPTION_LOSS.GRANULARITY == "elaborate"
    assert cfg.MODEL.CAPTION_LOSS.LOSS_WEIGHT == 0.1 and cfg.MODEL.CAPTION_LOSS.NEGATIVE_WEIGHT == 0.125


@pytest.mark.parametrize("config", [PAPER_CONFIG, CONFIGS / "vindr" / "faster_rcnn_R50_FPN_1x.yaml", *ABLATIONS],
                         ids=lambda p: p.stem)
def test_normalisation_follows_the_weights_the_config_loads(config):
    cfg = _load(config)
    checkpoints = [w for w in (cfg.MODEL.WEIGHTS, cfg.MODEL.INIT.WEIGHTS) if w]
    assert checkpoints, "a VinDr config starts from pretrained weights"
    for path in checkpoints:
        mean, std, _ = expected_input_normalization(path)
        assert list(cfg.MODEL.PIXEL_MEAN) == pytest.approx(mean) and list(cfg.MODEL.PIXEL_STD) == pytest.approx(std)
    check_input_normalization(cfg)


EXPECTED_ROWS = {
    "lr_0.0005": {"SOLVER.BASE_LR": 0.0005},
    "batch_64": {"SOLVER.IMS_PER_BATCH": 64, "DATALOADER.DATASET_BS": [4, 16]},
    "iter_130k": {"SOLVER.MAX_ITER": 130000},
    "support_3": {"DATALOADER.CONCEPT_GROUP_SIZE": 4},
    "captions_unelaborate": {"MODEL.CAPTION_LOSS.GRANULARITY": "unelaborate"},
    "text_clip": {"MODEL.TEXT_ENCODER.NAME": "ViT-B-32", "MODEL.TEXT_ENCODER.PRETRAINED": "openai"},
    "init_detic": {"MODEL.INIT.WEIGHTS": "models/Detic_OVCOCO_CLIP_R50_1x_max-size_caption.pth",
                   "MODEL.INIT.REINIT_MODULES": ["roi_heads.co_occurrence"]},
}


def test_every_ablation_changes_only_its_row():
    assert sorted(p.stem for p in ABLATIONS) == sorted(EXPECTED_ROWS)
    paper = _flatten(_load(PAPER_CONFIG))
    for path in ABLATIONS:
        ablation = _flatten(_load(path))
        changed = {k: v for k, v in ablation.items() if paper[k] != v and k != "OUTPUT_DIR"}
        assert changed == EXPECTED_ROWS[path.stem], path.name
        assert ablation["OUTPUT_DIR"] != paper["OUTPUT_DIR"]


@pytest.mark.slow
@pytest.mark.parametrize("config", BASES, ids=config_id)
def test_base_config_trains_two_iterations_with_tiny_overrides(tmp_path, config):
    cfg = tiny_cfg(tmp_path, config_file=config, group_size=None, extra=["MODEL.BACKBONE.FREEZE_AT", 5])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)
    group_size = cfg.DATALOADER.CONCEPT_GROUP_SIZE
    before = model.roi_heads.box_predictor.cls_score.proj.weight.detach().clone()
    with EventStorage():
        for step in range(2):
            losses = model(hand_made_batch(group_size=group_size, num_groups=2, seed=step))
            assert set(losses) == LOSS_KEYS and all(torch.isfinite(v) for v in losses.values())
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    assert not torch.equal(before, model.roi_heads.box_predictor.cls_score.proj.weight)
