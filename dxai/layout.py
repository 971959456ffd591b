"""Memory layouts for the CPU kernels: channels-last tensors, and a pixel shuffle that keeps them.

oneDNN runs convolutions on few channels fastest in channels-last memory (docs/experiments.md), and
torch's ``pixel_shuffle`` of a channels-last tensor takes a slow generic path (forward and backward
2.7 times the time of one reshaping copy at the inverse wavelet transform's finest level).
"""

from __future__ import annotations

import torch


def channels_last(images: torch.Tensor) -> torch.Tensor:
    """``images`` in channels-last memory format: oneDNN runs the first convolution of a network on
    1 to 4 channel inputs faster so (ResNet18 forward at 256 px 1.2-1.3x, the mask predictor 1.1x;
    docs/experiments.md), with the same outputs up to float rounding."""
    return images.contiguous(memory_format=torch.channels_last)


def pixel_shuffle_2x(x: torch.Tensor) -> torch.Tensor:
    """``F.pixel_shuffle(x, 2)`` of (B, 4C, H, W) -> (B, C, 2H, 2W), as one copy that reads and writes
    channels-last memory: output (2i + p, 2j + q) of channel c is input channel 4c + 2p + q at (i, j)."""
    batch, channels, height, width = x.shape
    out = x.permute(0, 2, 3, 1).reshape(batch, height, width, channels // 4, 2, 2)
    out = out.permute(0, 1, 4, 2, 5, 3).reshape(batch, 2 * height, 2 * width, channels // 4)
    return out.permute(0, 3, 1, 2)

