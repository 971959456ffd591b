"""The one result type that explainers, inference, evaluation, plotting and infer.py exchange.

Units: ``images``, ``distinct``, ``agnostic`` and ``branches`` are in the classifier's input
domain (images normalised to [-1, 1]), so ``distinct + agnostic == images`` for heatmap
baselines and ``distinct + agnostic == sum of branches`` for DXAI. ``cartoon`` is a [0, 1]
image (the CartoonX visualisation); ``heatmap`` is a non-negative B x 1 x H x W map.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Explanation:
    images: torch.Tensor                      # B x C x H x W, model domain
    target: torch.Tensor                      # B, the class explained
    predicted: torch.Tensor | None = None     # B, argmax of the classifier
    probabilities: torch.Tensor | None = None  # B x c, softmax of the classifier on images
    distinct: torch.Tensor | None = None      # B x C x H x W, model domain
    agnostic: torch.Tensor | None = None      # B x C x H x W, model domain
    branches: torch.Tensor | None = None      # B x n x C x H x W, model domain (DXAI)
    heatmap: torch.Tensor | None = None       # B x 1 x H x W, >= 0 (heatmap methods)
    cartoon: torch.Tensor | None = None       # B x C' x H x W in [0, 1] (CartoonX visualisation)
    mask: torch.Tensor | None = None          # B x M, the flattened wavelet mask in [0, 1]

    def to(self, device) -> Explanation:
        return Explanation(**{f.name: (v.to(device) if isinstance(v := getattr(self, f.name), torch.Tensor)
                                       else v) for f in fields(self)})

    def __getitem__(self, index) -> Explanation:
        """The explanation of a subset of the batch (an int keeps the batch dimension)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Explanation(**{f.name: (v[index] if isinstance(v := getattr(self, f.name), torch.Tensor)
                                       else v) for f in fields(self)})


def heatmap_decomposition(images: torch.Tensor, heatmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The DXAI paper's reading of a heatmap H >= 0 as parts: w = H / max(H) per image,
    distinct = w * x, agnostic = (1 - w) * x."""
    flat_max = heatmap.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    weight = heatmap / flat_max
    return weight * images, (1 - weight) * images
