"""Keep the memory a process frees for its next allocations, instead of handing it back to the OS.

glibc's malloc serves every block of 32 MB or more with its own ``mmap`` and unmaps it on free,
so a step that allocates a network's activations anew, as every training iteration and every
CartoonX step does, pays a page fault on each 4 kB page of them, every time. On the 2-core
CPU machine that was 40 % of a CartoonX step and 30 % of a decomposition iteration at 256 px
(docs/experiments.md). Turning off glibc's mmap and trimming lets the freed blocks be reused.

The entry points (``train.py``, ``infer.py``, ``python -m dxai.bench``, the background
processes) call ``keep_freed_memory`` once; importing ``dxai`` changes nothing.
``DXAI_KEEP_FREED_MEMORY=0`` leaves glibc's defaults. Other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters of glibc's malloc.h
M_MMAP_MAX = -4
LARGEST_TRIM_THRESHOLD = 2**31 - 1  # free memory at the top of the heap is returned above this (bytes)


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory; returns whether it was set."""
    if os.environ.get("DXAI_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl or another libc without glibc's mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, LARGEST_TRIM_THRESHOLD))
