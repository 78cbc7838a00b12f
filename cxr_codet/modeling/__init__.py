"""Backbones, meta-architectures, ROI heads, text encoders and the localization machinery."""
from . import backbone, text  # noqa: F401  (register the EfficientNet-Lite and ViT backbones and the text encoders)
from . import meta_arch, roi_heads  # noqa: F401,E402  (register every meta-architecture and CXR-CoDet's ROI heads)
