"""The shipped study files: every row builds its config and passes a run's start-up checks (fast), rows that
studies share are the same runs, the rows measured at a weight pin it, and every CPU study row builds its model
and optimizer (slow)."""
import pytest
from conftest import REPO_ROOT
from detectron2.modeling import build_model

from cxr_codet.config import build_cfg
from cxr_codet.engine.trainer import CXRTrainer
from cxr_codet.studies.plan import check_configs
from cxr_codet.studies.spec import load_study

CPU_STUDIES = sorted(REPO_ROOT.glob("studies/phantom_*.yaml"))


def _rows():
    for path in CPU_STUDIES:
        study = load_study(path)
        for row in study.rows:
            yield pytest.param(study, row, id=f"{path.stem}:{row.name}")


@pytest.mark.slow
@pytest.mark.parametrize("study, row", list(_rows()))
def test_study_row_builds_its_model_and_optimizer(study, row, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    cfg = build_cfg(row.config, [*study.overrides, *row.overrides, "MODEL.TEXT_ENCODER.CACHE_DIR",
                                 str(tmp_path / "text_cache")], cpu=True)
    model = build_model(cfg)
    optimizer = CXRTrainer.build_optimizer(cfg, model)
    assert sum(len(group["params"]) for group in optimizer.param_groups) > 0




STUDY_FILES = sorted((REPO_ROOT / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda p: p.stem)
def test_every_row_builds_its_config_and_passes_the_start_up_checks(in_repo, path):
    study = load_study(path.relative_to(REPO_ROOT))
    max_iter = check_configs(study, study.rows)
    assert set(max_iter) == {row.name for row in study.rows} and all(n > 0 for n in max_iter.values())


def test_every_study_file_is_checked():
    expected = {"vindr_paper", "phantom_components", "phantom_weak_labels", "nih_detection"}
    assert expected <= {path.stem for path in STUDY_FILES}


def test_rows_shared_between_cpu_studies_are_the_same_runs(in_repo):
    """MODEL_ZOO.md reuses phantom_components' concept_sampler and cxr_codet runs in the co-occurrence-weight
    study, and its faster_rcnn runs as the weak-label study's fraction 1.0: the rows must be identical (config,
    overrides, study-wide overrides, seeds)."""
    components = load_study("studies/phantom_components.yaml")
    weight = load_study("studies/phantom_cooccurrence_weight.yaml")
    weak = load_study("studies/phantom_weak_labels.yaml")
    for other, shared, original in ((weight, "concept_sampler", "concept_sampler"), (weight, "weight_0.1", "cxr_codet"),
                                    (weak, "faster_rcnn_box100", "faster_rcnn")):
        assert (components.overrides, components.seeds) == (other.overrides, other.seeds)
        a, b = other.row(shared), components.row(original)
        assert (a.config, a.overrides) == (b.config, b.overrides), shared


def test_make_demo_trains_the_measured_rows_and_rows_measured_at_codets_weight_pin_it(in_repo):
    """`make demo`'s config is the `demo` row of studies/phantom_demo.yaml (where its schedule was measured), at the
    phantom co-occurrence weight 0.01 that studies/phantom_cooccurrence_weight.yaml chose (its weight_0.01 row, on
    the R-18 recipe, is the R-18 demo config); the rows measured at CoDet's 0.1 must keep it."""
    demo = [line.split("?=")[1].strip() for line in (REPO_ROOT / "Makefile").read_text().splitlines()
            if line.startswith("DEMO_CONFIG")][0]
    demo_study = load_study("studies/phantom_demo.yaml")
    row = demo_study.row("demo")
    measured = build_cfg(row.config, ["SEED", "0", *demo_study.overrides, *row.overrides], cpu=True)
    assert build_cfg(demo, ["SEED", "0"], cpu=True).dump() == measured.dump()
    assert measured.MODEL.CO_OCCURRENCE.LOSS_WEIGHT == 0.01
    weight = load_study("studies/phantom_cooccurrence_weight.yaml")
    row = weight.row("weight_0.01")
    r18 = build_cfg(row.config, ["SEED", "0", *weight.overrides, *row.overrides], cpu=True)
    assert build_cfg("configs/phantom/cxr_codet_R18_FPN_phantom.yaml", ["SEED", "0"], cpu=True).dump() == r18.dump()
    at_codets = {"studies/phantom_components.yaml": ("cooccurrence_no_text", "cxr_codet"),
                 "studies/phantom_components_pilot.yaml": ("cooccurrence_no_text", "cxr_codet"),
                 "studies/phantom_cooccurrence_weight.yaml": ("weight_0.1",),
                 "studies/phantom_nih_like.yaml": ("cxr_codet",),
                 "studies/phantom_weak_labels.yaml": ("cxr_codet_box010", "cxr_codet_box025")}
    for path, names in at_codets.items():
        study = load_study(path)
        for name in names:
            cfg = build_cfg(study.row(name).config, [*study.overrides, *study.row(name).overrides], cpu=True)
            assert cfg.MODEL.CO_OCCURRENCE.LOSS_WEIGHT == 0.1, (path, name)


def test_weak_label_config_trains_at_the_weight_its_study_chose(in_repo):
    """studies/phantom_weak_labels.yaml measured CXR-CoDet at co-occurrence weights 0.1 and 0.01 and chose 0.01:
    the weak-label config must train at it, so that its *_weight0.01 rows are the config as shipped."""
    weak = load_study("studies/phantom_weak_labels.yaml")
    shipped = build_cfg(weak.row("cxr_codet_box010_weight0.01").config, [], cpu=True)
    assert shipped.MODEL.CO_OCCURRENCE.LOSS_WEIGHT == 0.01
    for name in ("cxr_codet_box010_weight0.01", "cxr_codet_box025_weight0.01", "cxr_codet_box100_weight0.01"):
        row = weak.row(name)
        cfg = build_cfg(row.config, [*weak.overrides, *row.overrides], cpu=True)
        assert cfg.MODEL.CO_OCCURRENCE.LOSS_WEIGHT == shipped.MODEL.CO_OCCURRENCE.LOSS_WEIGHT, name


def test_vindr_paper_study_runs_the_paper_config_and_every_ablation_unchanged(in_repo):
    study = load_study("studies/vindr_paper.yaml")
    configs = {row.config for row in study.rows}
    ablations = {str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "configs" / "vindr" / "ablations").glob("*.yaml")}
    assert configs == ablations | {"configs/vindr/cxr_codet_R50_C4_paper.yaml"}
    assert study.row(study.base).config == "configs/vindr/cxr_codet_R50_C4_paper.yaml"
    assert study.overrides == () and all(row.overrides == () for row in study.rows)
    assert len(study.seeds) >= 3


def test_weak_label_study_rows_build_and_pair_each_fraction(monkeypatch):
    """studies/phantom_weak_labels.yaml, read as the study runner reads it: every row's config and overrides
    build; at fractions below 1 the baseline drops the image-level-only images and CXR-CoDet keeps them; the
    box-only control (co-occurrence off) at fraction 0.1 drops them like the baseline."""
    monkeypatch.chdir(REPO_ROOT)  # study files name configs relative to the repository
    study = load_study(REPO_ROOT / "studies" / "phantom_weak_labels.yaml")
    assert list(study.seeds) == [0, 1, 2]
    by_fraction = {}
    for row in study.rows:
        cfg = build_cfg(row.config, [*study.overrides, *row.overrides], cpu=True)
        assert cfg.SOLVER.MAX_ITER == 850 and cfg.SOLVER.IMS_PER_BATCH == 8  # the component study's budget
        model = cfg.MODEL.META_ARCHITECTURE
        if model == "CXRCoDet" and not cfg.MODEL.CO_OCCURRENCE.ENABLED:
            model = "box-only control"
        by_fraction.setdefault(cfg.DATASETS.TRAIN_BOX_FRACTION, {})[model] = cfg
    assert sorted(by_fraction) == [0.1, 0.25, 1.0]
    for fraction, cells in by_fraction.items():  # at fraction 1.0 no image is image-level-only: nothing to drop
        assert cells["GeneralizedRCNN"].DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY == (fraction < 1.0)
        assert not cells["CXRCoDet"].DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY
        assert cells["CXRCoDet"].DATALOADER.BOX_IMAGES_PER_BATCH == 2
    control = by_fraction[0.1]["box-only control"]
    assert control.DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY and control.DATALOADER.SAMPLER_TRAIN == "TrainingSampler"
