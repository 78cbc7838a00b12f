"""Datasets, converters, mappers, samplers, class and caption metadata."""
from . import datasets  # noqa: F401  (registers the built-in datasets)
from . import image_pairs  # noqa: F401,E402  (registers the "PairTrainingSampler" training loader)
