"""The CXR-CoDet paper's protocol end to end on synthetic VinDr-like DICOMs: tools/prepare_vindr.py with the paper's
data options (every reader's box, a square resize, an imported val split), then the paper config's two-stream
training (box and caption batches 1:4, co-occurrence and caption losses) for a few iterations, shrunk to CPU size."""
import pytest
from conftest import CONFIGS, OFFLINE_TEXT_ENCODER, TINY_MODEL, make_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.env import seed_all_rng

from cxr_codet.data.classes import VINDR_CXR_CLASSES
from cxr_codet.data.converters.vindr_cli import main as prepare_vindr
from cxr_codet.data.datasets.coco_cxr import register_cxr_coco
from cxr_codet.data.synthetic_vindr import write_synthetic_vindr_release
from cxr_codet.engine.trainer import CXRTrainer

pytestmark = pytest.mark.slow


def test_paper_config_trains_both_streams_on_prepared_synthetic_vindr(tmp_path):
    images = write_synthetic_vindr_release(tmp_path / "release", 12, seed=0, side_range=(200, 260))
    (tmp_path / "val.txt").write_text("\n".join(image.image_id for image in images[:2]) + "\n")
    assert prepare_vindr([str(tmp_path / "release"), "--out", str(tmp_path / "datasets"), "--fusion", "keep_all",
                          "--resize", "64x64", "--val-ids", str(tmp_path / "val.txt"), "--workers", "1"]) == 0
    base = tmp_path / "datasets" / "vindr_cxr"
    names = []
    for split in ("train", "val"):
        names.append(f"paper_pipeline_{split}")
        register_cxr_coco(names[-1], str(base / "annotations" / f"vindr_cxr_{split}.json"),
                          str(base / "images" / "train"), VINDR_CXR_CLASSES)
    try:
        cfg = make_cfg(CONFIGS / "vindr" / "cxr_codet_R50_C4_paper.yaml", *TINY_MODEL, *OFFLINE_TEXT_ENCODER,
                       "DATASETS.TRAIN", (names[0],), "DATASETS.TEST", (), "MODEL.INIT.WEIGHTS", "",
                       "DATALOADER.DATASET_BS", [2, 4], "DATALOADER.DATASET_MIN_SIZES", [[64], [32]],
                       "DATALOADER.DATASET_MAX_SIZES", [64, 32], "SOLVER.MAX_ITER", 10, "SOLVER.STEPS", (8,),
                       "SOLVER.WARMUP_ITERS", 2, "SOLVER.CHECKPOINT_PERIOD", 1000, "SOLVER.LOG_PERIOD", 1,
                       "OUTPUT_DIR", str(tmp_path / "out"), splits=names)
        cfg.freeze()
        seed_all_rng(0)
        trainer = CXRTrainer(cfg)
        trainer.resume_or_load(resume=False)
        streams = trainer._trainer.data_loader.batch_sampler.stream_sequence(10)
        assert 0 in streams and streams.count(1) > streams.count(0)  # box and caption iterations, 1:4
        trainer.train()
        history = trainer.storage.histories()
        assert len(history["loss_caption"].values()) == streams.count(1)  # caption batches: image-level losses
        assert len(history["loss_rpn_cls"].values()) == streams.count(0)  # box batches: box losses
        assert all(v > 0 for v, _ in history["loss_caption"].values())
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
