"""Converters from raw dataset releases to the registered COCO-style layout (VinDr-CXR so far).

`tools/prepare_vindr.py` is the command line over `convert_vindr`; the stages (release reading, box
fusion, splitting, DICOM conversion) are separate modules so each can be checked on its own.
"""
from .errors import ConverterError
from .vindr import VindrConversionOptions, build_vindr_coco, convert_vindr

__all__ = ["ConverterError", "VindrConversionOptions", "build_vindr_coco", "convert_vindr"]
