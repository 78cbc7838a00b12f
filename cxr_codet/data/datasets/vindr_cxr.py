"""Placeholder: registration of the vindr_cxr dataset (being written)."""


def register_all_vindr_cxr(root):
    """Register the vindr_cxr splits under `root`."""
