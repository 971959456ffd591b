"""Residual blocks of the StarGAN-v2 family, able to run several branches as one network.

A ``groups``-branch tensor holds the branches side by side on the channel axis: channels
``[k * C, (k + 1) * C)`` belong to branch k. Grouped convolutions and per-channel
normalisation keep branches independent, and every parameter's first dimension is made of
``groups`` equal blocks, one per branch. Widths (``dim_in``, ``dim_out``) are per branch.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ResBlk(nn.Module):
    """Pre-activation residual block; optional instance norm and 2x average-pool downsampling."""

    def __init__(self, dim_in: int, dim_out: int, normalize: bool = False, downsample: bool = False,
                 groups: int = 1):
        super().__init__()
        self.normalize, self.downsample = normalize, downsample
        width_in, width_out = dim_in * groups, dim_out * groups
        self.conv1 = nn.Conv2d(width_in, width_in, 3, padding=1, groups=groups)
        self.conv2 = nn.Conv2d(width_in, width_out, 3, padding=1, groups=groups)
        if normalize:
            self.norm1 = nn.InstanceNorm2d(width_in, affine=True)
            self.norm2 = nn.InstanceNorm2d(width_in, affine=True)
        self.shortcut = (nn.Conv2d(width_in, width_out, 1, bias=False, groups=groups)
                         if dim_in != dim_out else None)

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            x = self.norm1(x)
        x = self.conv1(F.leaky_relu(x, 0.2))
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        if self.normalize:
            x = self.norm2(x)
        return self.conv2(F.leaky_relu(x, 0.2))

    def _skip(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is not None:
            x = self.shortcut(x)
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self._skip(x) + self._residual(x)) / math.sqrt(2)


class AdaIN(nn.Module):
    """Instance norm whose per-channel scale and shift come from a style vector.

    The style is shared by all branches; the affine map (one Linear) has its own rows for
    every branch's channels, laid out branch-major like every other parameter.
    """

    def __init__(self, style_dim: int, channels: int, groups: int = 1):
        super().__init__()
        self.channels, self.groups = channels, groups
        self.norm = nn.InstanceNorm2d(channels * groups, affine=False)
        self.fc = nn.Linear(style_dim, 2 * channels * groups)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        params = self.fc(style).view(-1, self.groups, 2, self.channels)
        gamma = params[:, :, 0].reshape(-1, self.groups * self.channels, 1, 1)
        beta = params[:, :, 1].reshape(-1, self.groups * self.channels, 1, 1)
        return (1 + gamma) * self.norm(x) + beta


class AdainResBlk(nn.Module):
    """Decoder residual block modulated by a style vector; optional 2x nearest upsampling."""

    def __init__(self, dim_in: int, dim_out: int, style_dim: int, upsample: bool = False, groups: int = 1):
        super().__init__()
        self.upsample = upsample
        width_in, width_out = dim_in * groups, dim_out * groups
        self.norm1 = AdaIN(style_dim, dim_in, groups)
        self.conv1 = nn.Conv2d(width_in, width_out, 3, padding=1, groups=groups)
        self.norm2 = AdaIN(style_dim, dim_out, groups)
        self.conv2 = nn.Conv2d(width_out, width_out, 3, padding=1, groups=groups)
        self.shortcut = (nn.Conv2d(width_in, width_out, 1, bias=False, groups=groups)
                         if dim_in != dim_out else None)

    def _residual(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.norm1(x, style), 0.2)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv1(x)
        x = F.leaky_relu(self.norm2(x, style), 0.2)
        return self.conv2(x)

    def _skip(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.shortcut(x) if self.shortcut is not None else x

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return (self._skip(x) + self._residual(x, style)) / math.sqrt(2)
