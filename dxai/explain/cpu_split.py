"""A batch split across the CPU's cores: one chunk of the work per core, each on one torch thread.

On a CPU the generator's per-branch forward runs on one intra-op thread (its many thin
convolutions and reductions run slower on two threads than on one), and the mask predictor's
small layers gain little from a second one. Chunks of the work computed side by side in Python
threads (torch releases the GIL inside its kernels) use every core at once instead: chunks of the
batch for any network (``split_over_cores``), and for the generator whole branches where possible
(``split_branches_over_cores``); docs/experiments.md measures them.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch


def split_over_cores(function: Callable, *batches: torch.Tensor):
    """``function(*batches)``, computed as one chunk of the batch per torch thread when that pays:
    on a CPU, without gradients, with more than one thread and image. The chunks' outputs (a
    tensor, or a list or tuple of tensors) are joined along the batch as ``function`` returns them
    for the whole batch; ``function`` must treat the images of a batch independently."""
    threads, batch = torch.get_num_threads(), len(batches[0])
    if torch.is_grad_enabled() or batches[0].device.type != "cpu" or threads < 2 or batch < 2:
        return function(*batches)
    count = min(threads, batch)
    chunks = [tensor.tensor_split(count) for tensor in batches]
    return _join(_side_by_side(count, lambda index: function(*(chunk[index] for chunk in chunks))))


def _side_by_side(count: int, work: Callable[[int], object]) -> list:
    """``[work(0), ..., work(count - 1)]``, each in its own Python thread on one torch thread, without
    gradients; the process's torch thread count is restored after."""
    threads = torch.get_num_threads()

    def run(index: int):
        torch.set_num_threads(1)  # per thread under OpenMP, process-wide otherwise: restored below
        with torch.no_grad():
            return work(index)

    try:
        with ThreadPoolExecutor(count, thread_name_prefix="dxai-cpu-split") as pool:
            return list(pool.map(run, range(count)))
    finally:
        torch.set_num_threads(threads)


def branch_work(num_branches: int, batch: int, threads: int) -> list[list[tuple[list[int], slice]]]:
    """Per thread, its units of (branch indices, images): whole branches on the whole batch as far as
    they divide among the threads, the remaining branches on one chunk of the images per thread. Every
    thread then computes about num_branches * batch / threads branch-images, in batches as large as
    that allows (the generator's thin layers run 10 % faster per image at batch 4 than at 2)."""
    whole, rest = divmod(num_branches, threads)
    bounds = [round(batch * index / threads) for index in range(threads + 1)]
    work = []
    for thread in range(threads):
        units = [(list(range(thread * whole, (thread + 1) * whole)), slice(0, batch))] if whole else []
        if rest and bounds[thread] < bounds[thread + 1]:
            units.append((list(range(threads * whole, num_branches)), slice(bounds[thread], bounds[thread + 1])))
        work.append(units)
    return work


def split_branches_over_cores(generator, images: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """``generator(images, style)`` (a ``dxai.nets.generator.Generator``), on a CPU without gradients
    as ``branch_work``'s units side by side, one torch thread each; else as one call."""
    threads, batch = torch.get_num_threads(), len(images)
    if torch.is_grad_enabled() or images.device.type != "cpu" or threads < 2 or len(style) != batch:
        return generator(images, style)
    work = branch_work(generator.num_branches, batch, threads)
    out = images.new_empty(len(style), generator.num_branches, generator.img_channels, *images.shape[-2:])

    def run_units(thread: int) -> None:
        for branches, rows in work[thread]:
            out[rows, branches[0]:branches[-1] + 1] = generator.branch_forward(images[rows], style[rows], branches)

    _side_by_side(threads, run_units)
    return out


def _join(outputs: list):
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs)
    return type(first)(_join([output[index] for output in outputs]) for index in range(len(first)))
