"""Placeholder: registration of the phantom dataset (being written)."""


def register_all_cxr_phantom(root):
    """Register the phantom splits under `root`."""
