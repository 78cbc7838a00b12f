"""Image files for tests: valid gray PNGs of any size, truncated ones, and 12-bit radiographs."""
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

HUGE = 10_000


def write_gray_png(path: Path, width: int, height: int) -> Path:
    """A valid 8-bit gray PNG of any size, streamed row by row (a 10000 x 10000 one costs ~100 KB, not 100 MB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(1)
    row = b"\x00" + b"\x80" * width  # filter byte + mid-gray pixels
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def truncated_png(path: Path) -> Path:
    ok, encoded = cv2.imencode(".png", (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    path.write_bytes(encoded.tobytes()[: len(encoded) // 2])
    return path


def twelve_bit(path: Path) -> np.ndarray:
    """A 12-bit ramp (0..4095) written as a 16-bit PNG; returns what its 8-bit rendering should be."""
    values = (np.arange(64 * 80).reshape(64, 80) * 4095 // (64 * 80 - 1)).astype(np.uint16)
    cv2.imwrite(str(path), values)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    return np.rint(values * (255 / 4095)).astype(np.uint8)
