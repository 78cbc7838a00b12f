"""Inference on your own images (tools/demo.py): PNG/JPEG/DICOM in, overlays and detection JSON out."""
