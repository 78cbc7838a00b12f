"""Read a (possibly gzipped) UTF-8 text table in one pass; bytes that are not UTF-8 are reported by line and column.

Python's own error names only a byte position ("position 11") and stops at the first bad byte; a table with
thousands of rows needs every bad line, its number and the column it falls in, to be fixed in one go.
"""
import gzip
import io
from pathlib import Path
from typing import List, Tuple, Union

import pandas as pd

_LINES_LISTED = 10


class TextEncodingError(ValueError):
    """A text file holds bytes that are not UTF-8; the message lists the bad lines with their column."""


def read_utf8_text(path: Union[str, Path]) -> str:
    """The file's text (".gz" files decompressed; a UTF-8 byte-order mark dropped); `TextEncodingError` lists
    every line that is not valid UTF-8."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TextEncodingError(_describe_bad_lines(Path(path), data)) from None


def read_utf8_csv(path: Union[str, Path], **read_csv_kwargs) -> pd.DataFrame:
    """`pandas.read_csv` over `read_utf8_text(path)`."""
    return pd.read_csv(io.StringIO(read_utf8_text(path)), **read_csv_kwargs)


def _describe_bad_lines(path: Path, data: bytes) -> str:
    lines = data.split(b"\n")
    header = [name.strip() for name in lines[0].decode("utf-8", errors="replace").lstrip("\ufeff").split(",")]
    bad: List[Tuple[int, str, int]] = []
    for number, line in enumerate(lines, start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            field = line[: exc.start].count(b",")
            column = header[field] if field < len(header) else f"#{field + 1}"
            bad.append((number, column, line[exc.start]))
    listed = "; ".join(f"line {n} (column {column}, byte 0x{byte:02x})" for n, column, byte in bad[:_LINES_LISTED])
    more = f"; and {len(bad) - _LINES_LISTED} more" if len(bad) > _LINES_LISTED else ""
    noun = "line is" if len(bad) == 1 else "lines are"
    return (
        f"{path}: {len(bad)} {noun} not valid UTF-8: {listed}{more}. The file was probably saved in another "
        "encoding (e.g. Latin-1 or Windows-1252): re-save the file as UTF-8"
    )
