"""Peak memory of a block of code, above what the process held when the block started.

GPU: `torch.cuda.max_memory_allocated` (tensors only), its peak reset at the start. CPU on Linux: the
kernel's resident-set high-water mark (VmHWM), reset at the start by writing 5 to /proc/self/clear_refs;
this counts everything the process touches (tensors, Python objects, libraries) but not DataLoader worker
processes. Elsewhere: the growth of `ru_maxrss`, which misses a peak lower than an earlier one.
"""
import ctypes
import ctypes.util
import gc
import resource
import sys
from typing import Optional

import torch

MIB = 2**20


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so the next baseline is fair."""
    gc.collect()
    libc_name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    if libc_name:
        libc = ctypes.CDLL(libc_name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


def _status_kib(field: str) -> Optional[int]:
    """A "kB" field of /proc/self/status (VmRSS, VmHWM); None where /proc is unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_resident_peak() -> bool:
    """Reset VmHWM to the current resident size (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _max_rss_bytes() -> int:
    """ru_maxrss in bytes (Linux reports KiB, macOS bytes)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


class PeakMemory:
    """`with PeakMemory(device) as memory: ...` then `memory.peak_mib` and `memory.method`."""

    def __init__(self, device: str = "cpu"):
        self.cuda = str(device).startswith("cuda")
        self.method = ""
        self._base = 0
        self.peak_mib = float("nan")

    def __enter__(self) -> "PeakMemory":
        release_free_memory()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            self.method = "torch.cuda.max_memory_allocated"
        elif _reset_resident_peak() and _status_kib("VmRSS") is not None:
            self._base = _status_kib("VmRSS") * 1024
            self.method = "VmHWM"
        else:
            self._base = _max_rss_bytes()
            self.method = "ru_maxrss"
        return self

    def __exit__(self, *exc_info) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.method == "VmHWM":
            peak = _status_kib("VmHWM") * 1024
        else:
            peak = _max_rss_bytes()
        self.peak_mib = max(0, peak - self._base) / MIB
