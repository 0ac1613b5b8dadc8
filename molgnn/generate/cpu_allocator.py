"""Keep freed tensor memory in the process on the CPU instead of handing it back to the OS.

glibc serves each large allocation (above 32 MiB, or less by default) by ``mmap`` and returns it by
``munmap`` when freed, so a sampling loop that builds the same big edge tensors every reverse step pays
page faults for all of them again at each step: on 2 cores that doubled the time of a batch of 128
MOSES graphs (28.5 vs 13.9 ms per graph and step). Raising the mmap and trim thresholds keeps freed
blocks in the heap for the next step. Only sampling sets it: it keeps a process's peak memory
resident, which the bounded-memory screen must not.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_THRESHOLD = 1 << 30


@functools.cache
def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to 1 GiB once per process; False where there is no
    glibc (macOS, musl) or it refuses, and nothing changes."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
