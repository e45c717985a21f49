"""The worker threads of the process: they read records files and parse large columns beside the calling
thread (Arrow's reader and hashing release the GIL)."""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor


def workers() -> ThreadPoolExecutor:
    """This process's two worker threads."""
    return _workers_of(os.getpid())


@functools.lru_cache(maxsize=1)
def _workers_of(process: int) -> ThreadPoolExecutor:
    """Threads that read the files and parse the large columns: Arrow's reader and hashing release the GIL, so
    they run beside the calling thread, which checks the small files meanwhile. Kept for the process (starting
    threads costs more than a small file's parse); made anew in a forked child, which has none of its parent's
    threads."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"records-parse-{process}")
