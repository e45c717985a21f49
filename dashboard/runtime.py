"""Settings of the running process, applied by the command line, the app and the benchmark.

Freed memory. The cohort core allocates and frees arrays of a million rows dozens of times per run. glibc
gives large freed blocks straight back to the kernel (each one mapped on its own, and the top of the heap
trimmed above 128 KiB), so the next array of that size is faulted in again, page by page: about 20,000
page faults per assessment of 20,000 patients, tens of milliseconds on a virtual machine. `keep_freed_memory`
lets glibc keep them for reuse, as pyarrow's own allocator (mimalloc) already does for Arrow's memory: blocks
up to 32 MiB come from the heap, and up to 256 MiB of free heap is kept. The process's peak memory is
unchanged; what it holds between runs stays at that peak instead of falling back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest: bigger blocks are still mapped on their own
TRIM_THRESHOLD = 256 * 1024 * 1024


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse (once per process); False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # no C library found, or one without mallopt (musl)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
