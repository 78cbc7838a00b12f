"""Every config file says only what it is about: no key set to the value it would inherit from its _BASE_ (or,
without one, from the defaults of detectron2 and cxr_codet.config)."""
from pathlib import Path

import pytest
import yaml
from detectron2.config import CfgNode, get_cfg

from cxr_codet import add_cxr_codet_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def inherited_cfg(path: Path) -> CfgNode:
    """The config `path` starts from: the defaults, then its _BASE_ chain."""
    cfg = get_cfg()
    add_cxr_codet_config(cfg)
    base = yaml.safe_load(path.read_text()).get("_BASE_")
    if base:
        cfg.merge_from_file(str(path.parent / base))
    return cfg


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


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_sets_no_key_to_the_value_it_inherits(path):
    assert restatements(path) == []


def test_a_restated_key_is_found(tmp_path):
    (tmp_path / "base.yaml").write_text("SOLVER:\n  BASE_LR: 0.5\n")
    (tmp_path / "child.yaml").write_text('_BASE_: "base.yaml"\nSOLVER:\n  BASE_LR: 0.5\n  MAX_ITER: 10\n'
                                         "INPUT:\n  MIN_SIZE_TRAIN: (800,)\n")
    assert restatements(tmp_path / "child.yaml") == ["SOLVER.BASE_LR", "INPUT.MIN_SIZE_TRAIN"]
