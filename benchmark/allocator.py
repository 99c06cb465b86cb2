"""The C allocator of a process that computes cells: glibc's malloc told to keep the memory it frees.

A CPU attack step allocates activations of tens of MB (seed_cnn, 250 images: 21 MB for the first conv's output)
and frees them when the step ends. By default glibc returns such blocks to the OS (mmap above a threshold that it
adapts up to 32 MB, heap trimming above twice that), so the next step page-faults them back in, zero-filled by
the kernel: on the default grid that is system time of the order of a tenth of the CPU time, and it varies from
run to run with the heap's history. Fixed thresholds keep freed blocks in the heap for reuse. Where to allocate
does not change what is computed (torch aligns its CPU buffers itself), only how often the kernel is asked.
On a C library without `mallopt` (macOS, musl) this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap (not from a fresh mapping of their own)...
MMAP_THRESHOLD = 256 * 2**20
# ...and the heap returns its free top to the OS only beyond this: at most this much freed memory stays held.
TRIM_THRESHOLD = 1024 * 2**20


def keep_freed_memory() -> bool:
    """Set the thresholds above in this process; True where the C library took them."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):  # no C library by that name, or one without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
