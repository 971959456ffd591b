"""A batch split across the CPU's cores: one chunk of images per core, each on one torch thread.

On a CPU the generator's per-branch forward runs on one intra-op thread (its many thin
convolutions and reductions run slower on two threads than on one), and the mask predictor's
small layers gain little from a second one. Chunks of the batch computed side by side in Python
threads (torch releases the GIL inside its kernels) use every core at once instead:
docs/experiments.md measures both.
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

    def run_chunk(index: int):
        torch.set_num_threads(1)  # per thread under OpenMP, process-wide otherwise: restored below
        with torch.no_grad():
            return function(*(chunk[index] for chunk in chunks))

    try:
        with ThreadPoolExecutor(count, thread_name_prefix="dxai-cpu-split") as pool:
            outputs = list(pool.map(run_chunk, range(count)))
    finally:
        torch.set_num_threads(threads)
    return _join(outputs)


def _join(outputs: list):
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs)
    return type(first)(_join([output[index] for output in outputs]) for index in range(len(first)))
