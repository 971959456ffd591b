"""The first images of a data set as one batch: the fixed images of panels and evaluations."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from dxai.normalization import Normalization


def first_batch(dataset: Dataset, count: int) -> dict[str, torch.Tensor]:
    """Items 0 .. count - 1 (fewer if the data set is smaller), stacked key by key."""
    items = [dataset[index] for index in range(min(count, len(dataset)))]
    return {key: torch.stack([torch.as_tensor(item[key]) for item in items]) for key in items[0]}


def first_images(dataset: Dataset, count: int, normalization: Normalization) -> torch.Tensor:
    """The first ``count`` images of a data set, in [0, 1]."""
    return normalization.denormalize(first_batch(dataset, count)["image"]).clamp(0, 1)
