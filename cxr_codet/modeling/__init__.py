"""Meta-architectures, ROI heads, the similarity head, text encoders and side heads."""
from . import text  # noqa: F401
from . import meta_arch, roi_heads  # noqa: F401,E402  (register CXRCoDet and its ROI heads)
from . import side_heads  # noqa: F401,E402  (register AFLoc and PhraseGrounding)
from . import image_heads  # noqa: F401,E402  (register ContrastiveClassifier and ProgressionDetector)
