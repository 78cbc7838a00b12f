"""Registers the VinDr-CXR splits (vindr_cxr_train/val/test) written by tools/prepare_vindr.py.

Layout under the datasets root (see datasets/README.md):
    vindr_cxr/images/train/<image_id>.png   (train and val images)
    vindr_cxr/images/test/<image_id>.png
    vindr_cxr/annotations/vindr_cxr_{train,val,test}.json
"""
import os

from ..classes import VINDR_CXR_CLASSES
from .coco_cxr import register_cxr_coco

# split -> folder of its images (the validation split is carved out of the official training images)
VINDR_CXR_SPLITS = {"train": "train", "val": "train", "test": "test"}


def register_all_vindr_cxr(root: str) -> None:
    """Register vindr_cxr_{train,val,test}; loading one whose files are absent says how to create them."""
    base = os.path.join(os.path.expanduser(root), "vindr_cxr")
    for split, image_folder in VINDR_CXR_SPLITS.items():
        json_file = os.path.join(base, "annotations", f"vindr_cxr_{split}.json")
        register_cxr_coco(
            f"vindr_cxr_{split}",
            json_file,
            os.path.join(base, "images", image_folder),
            VINDR_CXR_CLASSES,
            missing_files_hint=(
                f"Run tools/prepare_vindr.py to convert the VinDr-CXR release into {base} "
                "(layout in datasets/README.md), or point DETECTRON2_DATASETS at the folder that holds vindr_cxr/."
            ),
        )
