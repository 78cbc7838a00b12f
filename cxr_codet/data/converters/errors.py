"""The one error converters raise when they cannot continue (everything else is skipped and reported)."""


class ConverterError(RuntimeError):
    """The input cannot be converted at all: a missing file or column, no usable image, an unsafe output."""
