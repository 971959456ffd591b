"""The DXAI generator: n style-transfer branches run as one network, and ``decompose``.

Shapes: images B x C x H x W; style B x S (one style for every AdaIN block) or
B x num_style_blocks x S; branches B x n x C x H x W. A style of k * B rows decodes every image
under k styles from one encoder pass (row j * B + i: image i, style row j * B + i), as training
does with the styles of y and y~. Branch 0 is the class-distinct part
psi_1, the sum of the others the class-agnostic part.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from dxai.errors import DXAIError
from dxai.nets.blocks import (
    AdainResBlk,
    ResBlk,
    adain_params,
    adain_resblk_branch,
    branch_conv,
    pointwise_branch_conv,
    resblk_branch,
)

SKIPS = ("add", "concat")
PER_BRANCH_TRAINING_MIN_SIZE = 128  # with gradients, smaller images run the grouped forward (faster backward)


class GeneratorError(DXAIError):
    """A generator setting or input that does not fit together."""


class Generator(nn.Module):
    """Encoder of instance-norm ResBlks, decoder of AdaIN ResBlks, U-Net skips, n branches.

    All branches share the input image and the style vector but no weights: convolutions have
    ``groups=num_branches`` and every parameter's first dimension is ``num_branches`` equal
    blocks, block k belonging to branch k. Width per branch doubles at every downsampling,
    from ``base_channels`` up to ``max_channels``.

    ``encoder_blocks`` is the number of ResBlks per encoder level (one int for all, or one per
    level; the last block of a level downsamples). ``skip`` joins encoder and decoder branch by
    branch: ``"add"`` adds the encoder's features before a downsampling to the decoder's after the
    matching upsampling; ``"concat"`` (the official DXAI code's ``GroupedGenerator``) concatenates a
    level's output to the decoder's input of the matching upsampling block, which then takes twice
    the width.
    """

    def __init__(self, img_size: int, img_channels: int = 3, num_branches: int = 5, base_channels: int = 32,
                 max_channels: int = 256, num_downsample: int = 4, num_bottleneck: int = 2,
                 style_dim: int = 64, encoder_blocks: int | Sequence[int] = 1, skip: str = "add"):
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
        if skip not in SKIPS:
            raise GeneratorError(f"decomposition.skip must be one of {SKIPS}, not {skip!r}")
        per_level = [encoder_blocks] * num_downsample if isinstance(encoder_blocks, int) else list(encoder_blocks)
        if len(per_level) != num_downsample or min(per_level) < 1:
            raise GeneratorError(f"decomposition.encoder_blocks must be one count >= 1 per encoder level "
                                 f"({num_downsample} levels), not {encoder_blocks}")
        self.img_size, self.img_channels, self.num_branches = img_size, img_channels, num_branches
        self.style_dim, self.skip = style_dim, skip
        n = num_branches
        widths = [min(base_channels * 2**i, max_channels) for i in range(num_downsample + 1)]
        self.from_rgb = nn.Conv2d(img_channels, n * widths[0], 3, padding=1)
        encoder: list[nn.Module] = []
        for level, count in enumerate(per_level):
            encoder += [ResBlk(widths[level], widths[level], normalize=True, groups=n) for _ in range(count - 1)]
            encoder.append(ResBlk(widths[level], widths[level + 1], normalize=True, downsample=True, groups=n))
        encoder += [ResBlk(widths[-1], widths[-1], normalize=True, groups=n) for _ in range(num_bottleneck)]
        self.encoder = nn.ModuleList(encoder)
        skip_factor = 2 if skip == "concat" else 1
        self.decoder = nn.ModuleList(
            [AdainResBlk(widths[-1], widths[-1], style_dim, groups=n) for _ in range(num_bottleneck)]
            + [AdainResBlk(skip_factor * widths[i + 1], widths[i], style_dim, upsample=True, groups=n)
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

    def _check_input(self, x: torch.Tensor, style: torch.Tensor) -> int:
        """How many styles each image is decoded under (style rows / image rows)."""
        if x.dim() != 4 or x.shape[1] != self.img_channels or x.shape[-2:] != (self.img_size, self.img_size):
            raise GeneratorError(f"the generator takes B x {self.img_channels} x {self.img_size} x "
                                 f"{self.img_size} images, not {tuple(x.shape)}")
        if len(x) == 0 or len(style) % len(x):
            raise GeneratorError(f"the generator takes k * B styles for B images, not {len(style)} styles "
                                 f"for {len(x)} images")
        return len(style) // len(x)

    def forward(self, x: torch.Tensor, style: torch.Tensor, return_features: bool = False):
        """Branches B x n x C x H x W; with ``return_features`` also the decoder blocks' outputs.

        Runs branch after branch, each a dense network on its block of the parameters; equal to
        ``reference_forward`` up to float rounding. On a CPU it runs on one thread. Training below
        ``PER_BRANCH_TRAINING_MIN_SIZE`` px runs ``reference_forward``: there its backward is faster
        (docs/experiments.md).
        """
        if torch.is_grad_enabled() and self.img_size < PER_BRANCH_TRAINING_MIN_SIZE:
            return self.reference_forward(x, style, return_features)
        if x.device.type == "cpu" and torch.get_num_threads() > 1:
            with _one_thread():
                return self._per_branch_forward(x, style, return_features)
        return self._per_branch_forward(x, style, return_features)

    def branch_forward(self, x: torch.Tensor, style: torch.Tensor, branches: Sequence[int]) -> torch.Tensor:
        """Only the ``branches`` (indices) of ``forward``'s output, B x len(branches) x C x H x W, computed
        branch after branch on the calling thread, without gradients; each equals its branch of ``forward``."""
        with torch.no_grad():
            return self._per_branch_forward(x, style, False, branches)

    def _per_branch_forward(self, x: torch.Tensor, style: torch.Tensor, return_features: bool,
                            branches: Sequence[int] | None = None):
        styles_per_image = self._check_input(x, style)
        styles = self._block_styles(style)
        n = self.num_branches
        params = [(adain_params(block.norm1, s), adain_params(block.norm2, s))
                  for block, s in zip(self.decoder, styles)]
        outputs, features = [], [[] for _ in self.decoder]
        # Channels-last: oneDNN runs these narrow dense convolutions 1.1 to 1.6 times faster in it.
        x = x.contiguous(memory_format=torch.channels_last)
        for k in range(n) if branches is None else branches:
            h = branch_conv(self.from_rgb, x, k, n)
            skips = []
            for block in self.encoder:
                if block.downsample and self.skip == "add":
                    skips.append(h)
                h = resblk_branch(block, h, k, n)
                if block.downsample and self.skip == "concat":
                    skips.append(h)
            h, skips = _tile(h, styles_per_image), [_tile(skip, styles_per_image) for skip in skips]
            for index, (block, (params1, params2)) in enumerate(zip(self.decoder, params)):
                if block.upsample and self.skip == "concat":
                    h = torch.cat([skips.pop(), h], dim=1)
                h = adain_resblk_branch(block, h, params1, params2, k, n)
                if block.upsample and self.skip == "add":
                    h = h + skips.pop()
                if return_features:
                    features[index].append(h)
            outputs.append(pointwise_branch_conv(self.to_rgb, F.leaky_relu(h, 0.2), k, n))
        branches = torch.stack(outputs, dim=1).contiguous()
        if return_features:
            return branches, [torch.cat(parts, dim=1) for parts in features]
        return branches

    def reference_forward(self, x: torch.Tensor, style: torch.Tensor, return_features: bool = False):
        """``forward`` as the definition: all branches as one network of grouped convolutions."""
        styles_per_image = self._check_input(x, style)
        styles = self._block_styles(style)
        h = self.from_rgb(x.contiguous(memory_format=torch.channels_last))
        skips = []
        for block in self.encoder:
            if block.downsample and self.skip == "add":
                skips.append(h)
            h = block(h)
            if block.downsample and self.skip == "concat":
                skips.append(h)
        h, skips = _tile(h, styles_per_image), [_tile(skip, styles_per_image) for skip in skips]
        features = []
        for block, block_style in zip(self.decoder, styles):
            if block.upsample and self.skip == "concat":
                h = _concat_per_branch(skips.pop(), h, self.num_branches)
            h = block(h, block_style)
            if block.upsample and self.skip == "add":
                h = h + skips.pop()
            features.append(h)
        branches = self.to_rgb(F.leaky_relu(h, 0.2))
        branches = branches.view(len(style), self.num_branches, self.img_channels, *x.shape[-2:])
        return (branches, features) if return_features else branches


@contextmanager
def _one_thread():
    """One intra-op thread: the per-branch forward's many small ops run 2-6x slower on two threads
    of a shared 2-core CPU than on one (docs/experiments.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _tile(h: torch.Tensor, times: int) -> torch.Tensor:
    """The encoder's output for ``times`` styles per image: [h, h, ...] along the batch, in h's memory format."""
    return h if times == 1 else torch.cat([h] * times)


def _concat_per_branch(a: torch.Tensor, b: torch.Tensor, num_branches: int) -> torch.Tensor:
    """Concatenate two branch-major tensors B x (n * Ca) and B x (n * Cb) branch by branch."""
    joined = torch.cat([a.unflatten(1, (num_branches, -1)), b.unflatten(1, (num_branches, -1))], dim=2)
    return joined.flatten(1, 2)


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
