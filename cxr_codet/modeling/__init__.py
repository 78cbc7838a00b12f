"""Meta-architectures, ROI heads, the similarity head, text encoders and side heads."""
