"""Every meta-architecture (registered in detectron2's META_ARCH_REGISTRY): CXR-CoDet, the box-free localizers
AFLoc and PhraseGrounding (on the PromptLocalizer base), the image-report ContrastiveClassifier and the
image-pair ProgressionDetector."""
from .afloc import AFLoc
from .contrastive_classifier import ABNORMAL, ContrastiveClassifier
from .cxr_codet import CXRCoDet
from .grounding import PhraseGrounding
from .progression import ProgressionDetector
from .prompt_localizer import PromptLocalizer

__all__ = [
    "ABNORMAL",
    "AFLoc",
    "CXRCoDet",
    "ContrastiveClassifier",
    "PhraseGrounding",
    "ProgressionDetector",
    "PromptLocalizer",
]
