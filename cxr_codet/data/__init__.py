"""Datasets, converters, mappers, samplers, class and caption metadata."""
from . import datasets  # noqa: F401  (registers the built-in datasets)
