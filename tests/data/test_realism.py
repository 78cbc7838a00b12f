"""Dataset realism statistics (cxr_codet/data/realism.py): hand-computed lesion contrast, scale-free box sizes."""
import math

import numpy as np
import pytest

from cxr_codet.data.realism import dataset_realism, lesion_contrast, realism_table


def test_lesion_contrast_is_the_box_ring_cnr():
    image = np.zeros((40, 40), dtype=np.uint8)
    image[::2] = 10  # the ring alternates 0 and 10: mean 5, std 5
    image[10:20, 10:20] = 30
    assert lesion_contrast(image, [10, 10, 10, 10]) == pytest.approx((30 - 5) / 5)
    assert math.isnan(lesion_contrast(np.full((20, 20), 7, dtype=np.uint8), [5, 5, 4, 4]))  # flat ring
    assert math.isnan(lesion_contrast(image, [50, 50, 5, 5]))  # outside the image


def test_dataset_realism_is_scale_free():
    def record(size):
        image = np.zeros((size, size), dtype=np.uint8)
        image[size // 4: size // 2, size // 4: size // 2] = 255
        return {"file_name": image, "annotations": [{"bbox": [size / 4, size / 4, size / 4, size / 4]}]}

    small, large = (dataset_realism([record(s)], read_image=lambda image: image) for s in (64, 256))
    assert small["box_side_p50"] == pytest.approx(0.25) == large["box_side_p50"]
    assert small["aspect_p50"] == 1.0 and small["images"] == 1 and small["boxes"] == 1
    assert small["image_std_p50"] == pytest.approx(large["image_std_p50"])
    assert "| box_side_p50 | 0.25 | 0.25 |" in realism_table({"64": small, "256": large})
