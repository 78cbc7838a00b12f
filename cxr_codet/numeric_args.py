"""Checks of numeric command-line arguments, made before a tool does any work, each naming the argument.

`number_problem` says what is wrong with one value (not finite, out of range) or returns None; a tool collects the
problems of all its numeric arguments and refuses them together: `refuse(prog, problems)` prints one line,
`prog: error: --long-side must be 0 (keep the original size) or at least 16, got -5`, and exits with status 2.
"""
import math
import sys
from typing import Iterable, Optional

# The smallest long side an image may be shrunk to (tools/prepare_vindr.py --long-side, tools/demo.py
# --dicom-long-side): below it a radiograph has no lesion left to find (0 keeps the original size).
MIN_LONG_SIDE = 16


def number_problem(flag: str, value, *, low=None, high=None, low_open: bool = False, high_open: bool = False,
                   zero: Optional[str] = None) -> Optional[str]:
    """Why `value` of `flag` is unusable, or None. The range is [low, high] (either end open with `low_open` /
    `high_open`, unbounded when None); `zero` (what 0 means) also admits 0 outside that range."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{flag} must be a finite number, got {value}"
    if zero is not None and value == 0:
        return None
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not (too_low or too_high):
        return None
    if low is not None and high is not None:
        wanted = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        wanted = f"{'above' if low_open else 'at least'} {low:g}"
    else:
        wanted = f"{'below' if high_open else 'at most'} {high:g}"
    if zero is not None:
        wanted = f"0 ({zero}) or {wanted}"
    return f"{flag} must be {wanted}, got {value}"


def long_side_problem(flag: str, value: Optional[int], zero: str = "keep the original size") -> Optional[str]:
    """`number_problem` for a long side to shrink images to: 0 (or None) keeps them, else >= MIN_LONG_SIDE."""
    return number_problem(flag, value, low=MIN_LONG_SIDE, zero=zero)


def problems_of(checks: Iterable[Optional[str]]) -> list:
    """The problems among `checks` (the Nones dropped)."""
    return [problem for problem in checks if problem]


def refuse(prog: str, problems: Iterable[Optional[str]]) -> None:
    """Exit with status 2 and one line `prog: error: <problems>` when any check found a problem."""
    found = problems_of(problems)
    if found:
        print(f"{prog}: error: {'; '.join(found)}", file=sys.stderr)
        raise SystemExit(2)
