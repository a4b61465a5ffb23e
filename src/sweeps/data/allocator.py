"""Giving freed memory back to the system between the phases of preparing a big table.

glibc's allocator keeps memory a process freed for its next allocations instead of returning
it, and the larger the blocks freed, the more it keeps: its threshold for serving a block
from the heap instead of its own mapping rises to the largest block freed (up to 32 MiB), so
the float64 temporaries of loading and fitting a table, each some MiB, stay resident after
they are freed. At 3,000,000 x 50 that was 350 MiB held through the whole sweep, on top of
every later peak (docs/benchmarks.md, "Big tables"). `malloc_trim` returns it; it takes
milliseconds, so it is called once after each phase, never per step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None (another C library, another system: nothing to do)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None


def release_freed_memory() -> bool:
    """Return the memory the C allocator holds freed to the system; whether it could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
