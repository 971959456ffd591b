"""The glibc setting that keeps freed memory for reuse (dxai/allocator.py)."""

import subprocess
import sys

import pytest

CHECK = """
import torch
from dxai.allocator import keep_freed_memory
print(keep_freed_memory() if {set_it} else 'default')
import resource
def allocate(times):
    for _ in range(times):
        torch.empty(64 * 2**20, dtype=torch.uint8).fill_(1)   # 64 MB, above glibc's mmap threshold
allocate(10)  # the heap grows to its steady size
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
allocate(20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(set_it: bool, env: dict | None = None) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", CHECK.format(set_it=set_it)], capture_output=True, text=True,
                         check=True, env=env).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_without_new_page_faults():
    state, default_faults = page_faults(False)
    assert state == "default"
    state, kept_faults = page_faults(True)
    assert state == "True"
    # 20 blocks of 16384 pages each: glibc's default faults them all in every time, kept memory reuses them.
    assert default_faults > 10 * 16384
    assert kept_faults < 16384


def test_environment_variable_leaves_the_defaults(monkeypatch):
    from dxai.allocator import keep_freed_memory

    monkeypatch.setenv("DXAI_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False
