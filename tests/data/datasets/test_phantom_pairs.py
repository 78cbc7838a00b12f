"""data/datasets/phantom_pairs.py: the phantom image pairs are deterministic, lesions sit in their zones, and
the registered splits load through the comparison loader."""
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from cxr_codet.data.datasets.imagenome import PROGRESSION_LABELS
from cxr_codet.data.datasets.phantom_pairs import REGION_NAMES, render_phantom_pair


def test_phantom_pairs_are_deterministic_and_lesions_match_their_zones():
    first, again = render_phantom_pair(96, 5, 3), render_phantom_pair(96, 5, 3)
    np.testing.assert_array_equal(first.current, again.current)
    labels = []
    for index in range(30):
        pair = render_phantom_pair(96, 5, index)
        assert set(pair.prior_boxes) == set(REGION_NAMES) and pair.prior.shape == (96, 96)
        assert len({lesion.region for lesion in pair.lesions}) == len(pair.lesions)
        for lesion in pair.lesions:
            x, y = lesion.centre
            box = pair.prior_boxes[lesion.region]
            # the prior image is shifted by at most MAX_SHIFT of the side; the zone box moves with it
            assert box[0] - 4 <= x <= box[2] + 4 and box[1] - 4 <= y <= box[3] + 4
            sizes = {"worsened": (lesion.prior, lesion.current), "improved": (lesion.current, lesion.prior)}
            if lesion.comparison in sizes:
                smaller, larger = sizes[lesion.comparison]
                assert larger == (1.0, 1.0) and (smaller is None or smaller[0] < 0.7)
            else:
                assert lesion.prior == lesion.current
            labels.append(lesion.comparison)
    assert set(labels) == set(PROGRESSION_LABELS)


def test_registered_phantom_pairs_load_through_the_comparison_loader():
    records = DatasetCatalog.get("cxr_phantom_pairs_tiny_train")
    assert len(records) == 12
    assert MetadataCatalog.get("cxr_phantom_pairs_tiny_train").evaluator_type == "progression"
    for record in records:
        assert record["file_name"].endswith("_current.png") and record["prior_file_name"].endswith("_prior.png")
        for region in record["regions"]:
            assert region["name"] in REGION_NAMES
            assert PROGRESSION_LABELS[region["label"]] == region["comparison"]
            assert region["name"] in region["description"]
