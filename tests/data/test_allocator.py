"""Freed memory goes back to the system between the phases of preparing a big table."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sweeps.data.allocator import _malloc_trim

PROBE = """
import torch
from sweeps.data.allocator import release_freed_memory

def resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

big = torch.ones(2**21)  # 8 MiB: freeing it raises glibc's threshold for serving blocks from the heap
del big
blocks = [torch.ones(2**18) for _ in range(200)]  # 200 MiB of 1 MiB blocks, now on the heap
pin = torch.ones(16)  # allocated after them
del blocks  # freed, and kept by the allocator
held = resident_mib()
assert release_freed_memory()
print(held - resident_mib())
"""


@pytest.mark.skipif(_malloc_trim() is None, reason="glibc's allocator only (Linux)")
def test_memory_freed_by_a_phase_is_returned_to_the_system():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    returned = float(done.stdout)
    assert returned > 150, returned  # of the 200 MiB freed, which the allocator kept
