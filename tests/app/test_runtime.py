"""Process settings the command line, the app and the benchmark apply."""

from __future__ import annotations

import platform
import resource

import numpy as np

from dashboard.runtime import keep_freed_memory


def test_glibc_is_asked_to_keep_freed_memory_for_reuse():
    # On glibc (CI, the clinic's Linux servers) the setting must take; elsewhere it is left alone.
    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")
    assert keep_freed_memory() is keep_freed_memory()  # once per process


def test_a_freed_array_is_reused_without_page_faults():
    if platform.libc_ver()[0] != "glibc":
        raise AssertionError("this check needs glibc, as CI has")
    keep_freed_memory()
    size = 8 * 1024 * 1024  # 8 MiB: by default glibc maps such a block on its own and unmaps it when freed
    # (about 500 page faults for the five arrays below); kept, the freed block is reused
    np.ones(size // 8)  # allocated and freed once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        np.ones(size // 8)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 100, f"{faults} page faults for arrays that could reuse the freed one"
