"""Dataset registration: importing this package registers every built-in dataset with detectron2."""
from . import builtin  # noqa: F401
