"""Placeholder: registration of the ms_cxr dataset (being written)."""


def register_all_ms_cxr(root):
    """Register the ms_cxr splits under `root`."""
