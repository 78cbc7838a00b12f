"""Backbones, meta-architectures, ROI heads, text encoders, side heads and image-level heads."""
from . import backbone, text  # noqa: F401  (register the ViT backbone and the text encoders)
from . import meta_arch, roi_heads  # noqa: F401,E402  (register CXRCoDet and its ROI heads)
from . import side_heads  # noqa: F401,E402  (register AFLoc and PhraseGrounding)
from . import image_heads  # noqa: F401,E402  (register ContrastiveClassifier and ProgressionDetector)
