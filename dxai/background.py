"""Work in a second (spawned) process beside the main one, on a core the main one leaves idle.

A Ctrl-C is the parent's to handle: the child ignores SIGINT, and the parent terminates it when
it stops. The child runs on ``threads`` torch threads (the parent's ``trainer.cpu_threads``).
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable

import torch

from dxai.allocator import keep_freed_memory


def _run(target: Callable, threads: int | None, args: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_memory()
    if threads:
        torch.set_num_threads(threads)
    target(*args)


def start_process(target: Callable, args: tuple, name: str, threads: int | None, daemon: bool = False):
    """Start ``target(*args)`` (a picklable, module-level function) in a spawned process; returns it."""
    process = multiprocessing.get_context("spawn").Process(target=_run, args=(target, threads, args), name=name,
                                                           daemon=daemon)
    process.start()
    return process
