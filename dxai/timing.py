"""Wall time of GPU-or-CPU work: the clock is read only after the device has finished."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def synchronize(device: torch.device | str) -> None:
    """Wait for the queued work on ``device`` (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], T], device: torch.device | str) -> tuple[T, float]:
    """``function()`` and its wall seconds, with the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return result, time.perf_counter() - start
