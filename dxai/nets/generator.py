"""The DXAI generator: n style-transfer branches run as one network, and ``decompose``.

Shapes: images B x C x H x W; style B x S (one style for every AdaIN block) or
B x num_style_blocks x S; branches B x n x C x H x W. Branch 0 is the class-distinct part
psi_1, the sum of the others the class-agnostic part.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dxai.errors import DXAIError
from dxai.nets.blocks import AdainResBlk, ResBlk


class GeneratorError(DXAIError):
    """A generator setting or input that does not fit together."""


class Generator(nn.Module):
    """Encoder of instance-norm ResBlks, decoder of AdaIN ResBlks, U-Net skips, n branches.

    All branches share the input image and the style vector but no weights: convolutions have
    ``groups=num_branches`` and every parameter's first dimension is ``num_branches`` equal
    blocks, block k belonging to branch k. Skips add the encoder's features to the decoder's
    at the same resolution, branch by branch. Width per branch doubles at every downsampling,
    from ``base_channels`` up to ``max_channels``.
    """

    def __init__(self, img_size: int, img_channels: int = 3, num_branches: int = 5, base_channels: int = 32,
                 max_channels: int = 256, num_downsample: int = 4, num_bottleneck: int = 2,
                 style_dim: int = 64):
        super().__init__()
        bottom = img_size // 2**num_downsample
        if num_downsample < 1 or img_size % 2**num_downsample or bottom < 2:
            raise GeneratorError(
                f"the generator cannot take {img_size} px images with num_downsample={num_downsample}: the "
                f"image size must be divisible by 2**num_downsample and leave at least 2 px at the bottom; "
                f"set decomposition.num_downsample (e.g. {_fitting_downsample(img_size)}) or data.img_size")
        if num_branches < 2:
            raise GeneratorError(f"decomposition.num_branches must be at least 2 (distinct + agnostic), "
                                 f"not {num_branches}")
        self.img_size, self.img_channels, self.num_branches = img_size, img_channels, num_branches
        self.style_dim = style_dim
        n = num_branches
        widths = [min(base_channels * 2**i, max_channels) for i in range(num_downsample + 1)]
        self.from_rgb = nn.Conv2d(img_channels, n * widths[0], 3, padding=1)
        self.encoder = nn.ModuleList(
            [ResBlk(widths[i], widths[i + 1], normalize=True, downsample=True, groups=n)
             for i in range(num_downsample)]
            + [ResBlk(widths[-1], widths[-1], normalize=True, groups=n) for _ in range(num_bottleneck)])
        self.decoder = nn.ModuleList(
            [AdainResBlk(widths[-1], widths[-1], style_dim, groups=n) for _ in range(num_bottleneck)]
            + [AdainResBlk(widths[i + 1], widths[i], style_dim, upsample=True, groups=n)
               for i in reversed(range(num_downsample))])
        self.to_rgb = nn.Conv2d(n * widths[0], n * img_channels, 1, groups=n)

    @property
    def num_style_blocks(self) -> int:
        """How many style vectors a per-block style holds (one per decoder block)."""
        return len(self.decoder)

    def _block_styles(self, style: torch.Tensor) -> list[torch.Tensor]:
        if style.dim() == 2:
            return [style] * self.num_style_blocks
        if style.dim() == 3 and style.shape[1] == self.num_style_blocks:
            return list(style.unbind(1))
        raise GeneratorError(f"a style must be B x {self.style_dim} or B x {self.num_style_blocks} x "
                             f"{self.style_dim}, not {tuple(style.shape)}")

    def forward(self, x: torch.Tensor, style: torch.Tensor, return_features: bool = False):
        """Branches B x n x C x H x W; with ``return_features`` also the decoder blocks' outputs."""
        if x.dim() != 4 or x.shape[1] != self.img_channels or x.shape[-2:] != (self.img_size, self.img_size):
            raise GeneratorError(f"the generator takes B x {self.img_channels} x {self.img_size} x "
                                 f"{self.img_size} images, not {tuple(x.shape)}")
        styles = self._block_styles(style)
        h = self.from_rgb(x)
        skips = []
        for block in self.encoder:
            if block.downsample:
                skips.append(h)
            h = block(h)
        features = []
        for block, block_style in zip(self.decoder, styles):
            h = block(h, block_style)
            if block.upsample:
                h = h + skips.pop()
            features.append(h)
        branches = self.to_rgb(F.leaky_relu(h, 0.2))
        branches = branches.view(x.shape[0], self.num_branches, self.img_channels, *x.shape[-2:])
        return (branches, features) if return_features else branches


def _fitting_downsample(img_size: int) -> int:
    levels = 0
    while img_size % 2 ** (levels + 1) == 0 and img_size // 2 ** (levels + 1) >= 4 and levels < 4:
        levels += 1
    return max(levels, 1)


def decompose(generator: Generator, styles: torch.Tensor, images: torch.Tensor,
              labels: torch.Tensor) -> torch.Tensor:
    """Branches of ``images`` under the style of ``labels`` (one fixed style per class).

    ``styles`` is num_classes x S (or num_classes x blocks x S), e.g. from
    ``dxai.nets.mapping.class_styles``; the result is deterministic. psi_distinct is
    ``branches[:, 0]``, psi_agnostic ``branches[:, 1:].sum(1)``.
    """
    return generator(images, styles[labels])
