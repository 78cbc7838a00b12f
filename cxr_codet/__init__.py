"""cxr-codet: text-guided disease localization in chest X-rays on detectron2.

Importing the package applies the detectron2 compatibility shims and registers every dataset,
architecture and head with detectron2's registries.
"""
from . import compat

compat.apply()

from . import data  # noqa: E402  (registers datasets)
from . import modeling  # noqa: E402  (registers architectures and heads)
from .config import add_cxr_codet_config  # noqa: E402

__all__ = ["add_cxr_codet_config"]
__version__ = "0.1.0"
