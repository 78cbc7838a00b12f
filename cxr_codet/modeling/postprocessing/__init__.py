"""Post-processing of localization maps that works on any head's output (numpy or torch maps)."""
from .bimodal_bias_merging import *  # noqa: F401,F403 (the module's __all__ is this package's API)
from .bimodal_bias_merging import __all__  # noqa: F401
