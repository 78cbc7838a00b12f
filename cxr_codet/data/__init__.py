"""Datasets, converters, the input pipeline (mappers, samplers, loaders), class and caption metadata."""
from . import datasets  # noqa: F401  (registers the built-in datasets)
