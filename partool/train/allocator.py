"""Keep a CPU training run's resident memory near the size of its live tensors (glibc's malloc).

glibc serves an allocation above its mmap threshold with a mapping of its own, unmapped when freed, but it
raises that threshold each time such a block is freed (up to 32 MB). After the first few frees of a training
step, the (batch, channels, length) activations of a Mamba model come from the heap instead, where the
holes they leave keep counting as resident memory and add up to gigabytes over a step. Fixing the threshold
(mallopt) stops the raising: every activation of 8 MB or more is mapped and unmapped on its own.
`benchmarks/train_memory.py` measures the peak with and without it (`--default-malloc`).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
LARGE_ALLOCATION_BYTES = 8 << 20


def map_large_allocations() -> bool:
    """Fix glibc's mmap threshold at 8 MB for this process; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, LARGE_ALLOCATION_BYTES) == 1
