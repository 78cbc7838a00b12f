"""data/image_pairs.py: ImagePairMapper resizes both images, flips them together and names bad records."""
import numpy as np
import pytest
import torch
from conftest import TINY_SIZE
from detectron2.data import DatasetCatalog
from tiny_cxr_codet import progression_cfg

from cxr_codet.data.image_pairs import ImagePairMapper


def test_pair_mapper_resizes_both_images_and_flips_them_together(tmp_path):
    record = DatasetCatalog.get("cxr_phantom_pairs_tiny_train")[0]
    cfg = progression_cfg("INPUT.MIN_SIZE_TEST", 32, "INPUT.MAX_SIZE_TEST", 32)
    mapped = ImagePairMapper(cfg, is_train=False)(record)
    assert mapped["image"].shape == mapped["prior_image"].shape == (3, 32, 32)
    assert mapped["image"].dtype == torch.uint8
    torch.testing.assert_close(mapped["current_boxes"], torch.tensor([r["current_box"] for r in record["regions"]]) / 2)
    torch.testing.assert_close(mapped["prior_boxes"], torch.tensor([r["prior_box"] for r in record["regions"]]) / 2)
    assert mapped["progression_labels"].tolist() == [r["label"] for r in record["regions"]]
    train_mapper = ImagePairMapper(progression_cfg("INPUT.RANDOM_FLIP", "horizontal"), is_train=True)
    for seed in range(4):
        np.random.seed(seed)
        flipped = np.random.rand() < 0.5
        np.random.seed(seed)
        out = train_mapper(record)
        for key, box_key in (("current_boxes", "current_box"), ("prior_boxes", "prior_box")):
            original = torch.tensor([r[box_key] for r in record["regions"]], dtype=torch.float32)
            expected = torch.stack([TINY_SIZE - original[:, 2], original[:, 1], TINY_SIZE - original[:, 0],
                                    original[:, 3]], dim=1) if flipped else original
            torch.testing.assert_close(out[key], expected)


def test_pair_mapper_rejects_records_without_a_prior_and_wrong_sizes():
    cfg = progression_cfg()
    record = DatasetCatalog.get("cxr_phantom_pairs_tiny_train")[0]
    with pytest.raises(KeyError, match="prior_file_name"):
        ImagePairMapper(cfg, is_train=False)({"file_name": record["file_name"], "image_id": 1})
    with pytest.raises(ValueError, match="says 65 x 64"):
        ImagePairMapper(cfg, is_train=False)(dict(record, prior_height=65))
