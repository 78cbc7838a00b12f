"""Placeholder: registration of the nih_cxr14 dataset (being written)."""


def register_all_nih_cxr14(root):
    """Register the nih_cxr14 splits under `root`."""
