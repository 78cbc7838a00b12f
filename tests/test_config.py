"""cxr_codet/config.py: every key declared once with its comment, and the deprecated key names read as their new
ones (one deprecation line naming the new key), from config files and KEY VALUE overrides alike."""
import logging

import pytest
import yaml
from conftest import REPO_ROOT

from cxr_codet.config import DEPRECATED_KEYS, build_cfg, default_cfg, run_seed

CONFIG_LOGGER = "cxr_codet.config"

# A value for every deprecated key that differs from the new key's default, so the test sees it arrive.
OLD_VALUES = {
    "MODEL.ROI_BOX_HEAD.CO_OCCURRENCE_ON": False,
    "MODEL.ROI_BOX_HEAD.USE_TEXT_GUIDANCE": False,
    "MODEL.ROI_BOX_HEAD.WS_NUM_PROPS": 16,
    "MODEL.ROI_BOX_HEAD.MASK_OTHER_FINDINGS": False,
    "MODEL.ROI_BOX_HEAD.IMAGE_LOSS_WEIGHT": 0.03,
    "MODEL.TEXT_ENCODER.DESCRIPTIONS": "unelaborate",
    "MODEL.TEXT_ENCODER.PROMPT_TEMPLATE": "{} on a chest radiograph",
    "MODEL.AFLOC.REPORT_GRANULARITIES": ["unelaborate"],
}


def value_of(cfg, key):
    for name in key.split("."):
        cfg = cfg[name]
    return cfg


def nested(flat: dict) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        *path, leaf = key.split(".")
        node = tree
        for name in path:
            node = node.setdefault(name, {})
        node[leaf] = value
    return tree


def deprecation_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == CONFIG_LOGGER and "deprecated" in r.getMessage()]


def test_every_deprecated_key_has_a_declared_new_key_and_is_gone():
    cfg = default_cfg()
    for old, new in DEPRECATED_KEYS.items():
        value_of(cfg, new)  # declared
        with pytest.raises(KeyError):
            value_of(cfg, old)
    assert set(OLD_VALUES) <= set(DEPRECATED_KEYS)


def test_deprecated_keys_in_a_config_file_are_read_as_their_new_names(tmp_path, caplog):
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(nested(OLD_VALUES)))
    with caplog.at_level(logging.WARNING, logger=CONFIG_LOGGER):
        cfg = build_cfg(str(tmp_path / "old.yaml"))
    for old, value in OLD_VALUES.items():
        assert value_of(cfg, DEPRECATED_KEYS[old]) == value, old
    lines = deprecation_lines(caplog)
    assert len(lines) == len(OLD_VALUES)
    assert ("Config key MODEL.ROI_BOX_HEAD.IMAGE_LOSS_WEIGHT is deprecated; it is read as "
            "MODEL.CO_OCCURRENCE.LOSS_WEIGHT, its new name") in lines


def test_deprecated_keys_from_a_base_file_and_the_command_line(tmp_path, caplog):
    (tmp_path / "base.yaml").write_text("MODEL:\n  ROI_BOX_HEAD:\n    WS_NUM_PROPS: 16\n")
    (tmp_path / "child.yaml").write_text('_BASE_: "base.yaml"\nMODEL:\n  CO_OCCURRENCE:\n    LOSS_WEIGHT: 0.05\n')
    with caplog.at_level(logging.WARNING, logger=CONFIG_LOGGER):
        cfg = build_cfg(str(tmp_path / "child.yaml"), ["MODEL.ROI_BOX_HEAD.IMAGE_LOSS_WEIGHT", "0.2",
                                                        "MODEL.LOCALIZATION_MAPS.PROMPT_GRANULARITY", "unelaborate"])
    assert cfg.MODEL.CO_OCCURRENCE.NUM_PROPOSALS == 16
    assert cfg.MODEL.CO_OCCURRENCE.LOSS_WEIGHT == 0.2  # the command line comes later and wins, as for any key
    assert cfg.MODEL.PROMPTS.GRANULARITY == "unelaborate"
    assert len(deprecation_lines(caplog)) == 3
    later = build_cfg(str(tmp_path / "child.yaml"), ["MODEL.ROI_BOX_HEAD.IMAGE_LOSS_WEIGHT", "0.2",
                                                      "MODEL.CO_OCCURRENCE.LOSS_WEIGHT", "0.3"])
    assert later.MODEL.CO_OCCURRENCE.LOSS_WEIGHT == 0.3


def test_one_file_chain_setting_both_names_differently_is_refused(tmp_path):
    (tmp_path / "both.yaml").write_text("MODEL:\n  ROI_BOX_HEAD:\n    IMAGE_LOSS_WEIGHT: 0.1\n"
                                        "  CO_OCCURRENCE:\n    LOSS_WEIGHT: 0.01\n")
    with pytest.raises(ValueError, match="MODEL.ROI_BOX_HEAD.IMAGE_LOSS_WEIGHT = 0.1 and "
                                         "MODEL.CO_OCCURRENCE.LOSS_WEIGHT = 0.01.*keep MODEL.CO_OCCURRENCE.LOSS_WEIGHT"):
        build_cfg(str(tmp_path / "both.yaml"))
    (tmp_path / "two_old.yaml").write_text("MODEL:\n  TEXT_ENCODER:\n    DESCRIPTIONS: unelaborate\n"
                                           "  LOCALIZATION_MAPS:\n    PROMPT_GRANULARITY: elaborate\n")
    with pytest.raises(ValueError, match="both MODEL.PROMPTS.GRANULARITY"):
        build_cfg(str(tmp_path / "two_old.yaml"))


SHIPPED_FILES = sorted((REPO_ROOT / "configs").rglob("*.yaml")) + sorted((REPO_ROOT / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_FILES,
                         ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_shipped_files_use_no_deprecated_key(path):
    text = path.read_text()
    leaves = {old.rsplit(".", 1)[1] for old in DEPRECATED_KEYS} - {"MASK_OTHER_FINDINGS"}  # kept under its new section
    used = sorted(leaf for leaf in leaves if f"{leaf}:" in text or f".{leaf}," in text or f".{leaf}]" in text)
    assert used == [], f"{path.name} still uses deprecated key names {used}; their new names: DEPRECATED_KEYS"


def test_build_cfg_draws_seed_minus_one_once_and_run_seed_reads_it():
    drawn = build_cfg(None)
    assert drawn.SEED >= 0 and run_seed(drawn) == drawn.SEED
    assert build_cfg(None, ["SEED", 5]).SEED == 5
    undrawn = default_cfg()
    assert undrawn.SEED == -1
    with pytest.raises(ValueError, match="SEED = -1 .* has not been drawn: build the config with "
                                         "cxr_codet.config.build_cfg"):
        run_seed(undrawn)


def test_a_misspelt_key_names_the_closest_declared_one(tmp_path):
    with pytest.raises(AssertionError, match="Non-existent key: MODEL.CO_OCCURRENCE.LOSS_WIEGHT; did you mean "
                                             "MODEL.CO_OCCURRENCE.LOSS_WEIGHT"):
        build_cfg(None, ["MODEL.CO_OCCURRENCE.LOSS_WIEGHT", 0.1])
    (tmp_path / "typo.yaml").write_text("MODEL:\n  CO_OCCURRENCE:\n    NUM_PROPOSAL: 8\n")
    with pytest.raises(KeyError, match="MODEL.CO_OCCURRENCE.NUM_PROPOSAL; did you mean MODEL.CO_OCCURRENCE.NUM_PROPOSALS"):
        build_cfg(str(tmp_path / "typo.yaml"))
