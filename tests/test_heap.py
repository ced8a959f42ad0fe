"""hpcprep.heap: freed heap pages go back to the system (the sampling store's RSS)."""

import os
import platform

import numpy as np
import pytest

from hpcprep.heap import release_free_memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="malloc_trim is glibc's")
def test_freed_pieces_below_the_heap_top_leave_the_rss():
    pieces = [np.ones(96 * 1024 // 8) for _ in range(1500)]   # ~140 MiB, below the mmap threshold
    keep = pieces[-1]   # holds the heap's top: free() alone cannot shrink the heap
    del pieces
    before = _rss_bytes()
    assert release_free_memory() is True
    assert before - _rss_bytes() > 64 * 2**20
    assert keep.sum() == keep.size
