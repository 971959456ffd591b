"""The multi-head discriminator: a per-class real/fake critic that is also a classifier."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dxai.errors import DXAIError
from dxai.nets.blocks import ResBlk


class Discriminator(nn.Module):
    """ResBlk downsampling stack to 4 px (the paper's table 7), then one output per class.

    ``D(x)[:, k]`` is the realness of x as an image of class k; ``argmax`` over classes makes
    D a classifier. Width doubles per downsampling from ``base_channels`` to ``max_channels``.
    """

    def __init__(self, img_size: int, img_channels: int = 3, num_classes: int = 2, base_channels: int = 64,
                 max_channels: int = 512):
        super().__init__()
        if img_size < 4:
            raise DXAIError(f"the discriminator needs images of at least 4 px, not {img_size} (data.img_size)")
        self.img_size = img_size
        blocks: list[nn.Module] = [nn.Conv2d(img_channels, base_channels, 3, padding=1)]
        side, width = img_size, base_channels
        while side > 4 and side % 2 == 0:
            blocks.append(ResBlk(width, min(2 * width, max_channels), downsample=True))
            side, width = side // 2, min(2 * width, max_channels)
        self.blocks = nn.Sequential(*blocks)
        self.final = nn.Conv2d(width, width, side)
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x num_classes logits."""
        h = F.leaky_relu(self.blocks(x), 0.2)
        h = F.leaky_relu(self.final(h), 0.2)
        return self.head(h).flatten(1)
