"""Every row of the shipped CPU study files builds its model and optimizer: a row whose overrides cannot train
(e.g. an LR multiplier naming a module the row turned off) fails here, not 40 minutes into a study."""
from pathlib import Path

import pytest
from detectron2.modeling import build_model

from cxr_codet.config import build_cfg
from cxr_codet.studies.spec import load_study
from cxr_codet.engine.trainer import CXRTrainer

pytestmark = pytest.mark.slow  # builds about a dozen detectors

REPO = Path(__file__).resolve().parents[1]
CPU_STUDIES = sorted(REPO.glob("studies/phantom_*.yaml"))


def _rows():
    for path in CPU_STUDIES:
        study = load_study(path)
        for row in study.rows:
            yield pytest.param(study, row, id=f"{path.stem}:{row.name}")


@pytest.mark.parametrize("study, row", list(_rows()))
def test_study_row_builds_its_model_and_optimizer(study, row, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = build_cfg(row.config, [*study.overrides, *row.overrides, "MODEL.TEXT_ENCODER.CACHE_DIR",
                                 str(tmp_path / "text_cache")], cpu=True)
    model = build_model(cfg)
    optimizer = CXRTrainer.build_optimizer(cfg, model)
    assert sum(len(group["params"]) for group in optimizer.param_groups) > 0
