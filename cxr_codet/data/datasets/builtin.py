"""Registers the built-in datasets under $DETECTRON2_DATASETS (detectron2's convention; default ./datasets).

Registration is lazy: nothing is read or generated until a dataset is first used.
"""
import os

from .ms_cxr import register_all_ms_cxr
from .nih_cxr14 import register_all_nih_cxr14
from .phantom import register_all_cxr_phantom
from .phantom_pairs import register_all_cxr_phantom_pairs
from .vindr_cxr import register_all_vindr_cxr


def datasets_root() -> str:
    """The folder that holds every built-in dataset."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


_root = datasets_root()
register_all_cxr_phantom(_root)
register_all_cxr_phantom_pairs(_root)
register_all_vindr_cxr(_root)
register_all_nih_cxr14(_root)
register_all_ms_cxr(_root)
