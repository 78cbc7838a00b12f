"""The largest image cxr-codet decodes: files whose header declares more pixels are refused before decoding.

A chest radiograph has at most about 4300 x 4300 pixels (18 megapixels); MAX_IMAGE_PIXELS leaves ample room
above that while keeping a huge or corrupt header from making a loader, the converter or the demo allocate
gigabytes. The check reads only the header (PNG/JPEG via Pillow, DICOM Rows/Columns).
"""
import io
import warnings
from typing import Optional

from PIL import Image

MAX_IMAGE_PIXELS = 50_000_000


def oversize_problem(width: int, height: int) -> Optional[str]:
    """Why an image of width x height pixels is refused, or None when it is within MAX_IMAGE_PIXELS."""
    pixels = int(width) * int(height)
    if pixels <= MAX_IMAGE_PIXELS:
        return None
    return (
        f"the image is {width}x{height} pixels ({pixels / 1e6:.1f} megapixels), above the limit of "
        f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (cxr_codet.data.image_limits.MAX_IMAGE_PIXELS); "
        "shrink it first (e.g. tools/prepare_vindr.py --long-side)"
    )


def encoded_oversize_problem(data: bytes) -> Optional[str]:
    """`oversize_problem` for an encoded PNG/JPEG, from its header alone; None when the header is fine or
    unparseable (the decoder then reports the file as undecodable)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:
        return f"the image is too large to decode ({exc})"
    except Exception:  # not an image Pillow knows: leave the verdict to the decoder
        return None
    return oversize_problem(width, height)
