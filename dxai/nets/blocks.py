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

INV_SQRT2 = 1 / math.sqrt(2)


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


# -- one branch at a time ------------------------------------------------------------------------
# The generator's forward runs every branch as its own dense network on its block of the
# parameters: on a CPU the per-branch dense convolutions run faster than one grouped convolution,
# and an instance norm with its affine map is two fast sums and one multiply-add
# (docs/experiments.md, "The generator's forward"). The grouped ``forward`` above is the
# definition; ``tests/test_generator_fast.py`` holds the two equal.

def _branch_rows(count: int, branch: int, groups: int) -> slice:
    """The rows of branch ``branch`` in a branch-major parameter of ``count`` rows."""
    width = count // groups
    return slice(branch * width, (branch + 1) * width)


def _channels_last_only(x: torch.Tensor) -> bool:
    """Whether ``x`` is laid out channels-last and not also plain contiguous (as tensors with one
    channel or one position are)."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def branch_conv(conv: nn.Conv2d, x: torch.Tensor, branch: int, groups: int, scale: float = 1.0) -> torch.Tensor:
    """Branch ``branch``'s part of the grouped ``conv`` on that branch's features ``x`` (B x C x H x W),
    times ``scale`` (folded into the weights, which are far smaller than the features)."""
    rows = _branch_rows(conv.out_channels, branch, groups)
    weight, bias = conv.weight[rows], None if conv.bias is None else conv.bias[rows]
    if scale != 1.0:
        weight, bias = weight * scale, None if bias is None else bias * scale
    return F.conv2d(x, weight, bias, conv.stride, conv.padding)


def pointwise_branch_conv(conv: nn.Conv2d, x: torch.Tensor, branch: int, groups: int) -> torch.Tensor:
    """``branch_conv`` of a 1x1 ``conv`` on a channels-last ``x``, with a contiguous (NCHW) result: one
    matrix product of the weights with the positions' channel vectors. For the generator's last layer
    (a few output channels), where the convolution and the copy of its channels-last result into the
    branches' stack both run along rows of a few elements."""
    rows = _branch_rows(conv.out_channels, branch, groups)
    outputs = rows.stop - rows.start
    batch, channels, height, width = x.shape
    positions = x.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
    out = torch.matmul(conv.weight[rows].view(outputs, channels), positions.transpose(1, 2))
    if conv.bias is not None:
        out = out + conv.bias[rows].view(1, outputs, 1)
    return out.view(batch, outputs, height, width)


# Row t of the 4x4 kernel of a stride-2, padding-1 transposed convolution that equals nearest 2x
# upsampling followed by a 3x3, padding-1 convolution: the rows r of the 3x3 kernel it sums (``[t][r]``).
_UPSAMPLING_TAPS = ((0, 0, 1), (0, 1, 1), (1, 1, 0), (1, 0, 0))


def upsampled_branch_conv(conv: nn.Conv2d, x: torch.Tensor, branch: int, groups: int) -> torch.Tensor:
    """``branch_conv(conv, nearest_2x_upsample(x))`` for a 3x3, padding-1 ``conv``, as one stride-2
    transposed convolution of ``x`` itself with a 4x4 kernel: the same sums of products, without the
    upsampled copy (oneDNN: 1.5-2.3x faster than a sub-pixel convolution and its pixel shuffle)."""
    rows = _branch_rows(conv.out_channels, branch, groups)
    taps = torch.tensor(_UPSAMPLING_TAPS, dtype=conv.weight.dtype, device=conv.weight.device)
    kernel = torch.einsum("ty,ux,oiyx->iotu", taps, taps, conv.weight[rows])
    bias = None if conv.bias is None else conv.bias[rows]
    return F.conv_transpose2d(x, kernel, bias, stride=2, padding=1)


WIDE_ROW = 64  # elements per row of the wide view of a channels-last tensor with few channels


def _wide_rows(x: torch.Tensor) -> torch.Tensor | None:
    """A channels-last ``x`` (B x C x H x W) as a (B, HW / k, k * C) view: k positions per row, so that
    a per-channel multiply-add or sum runs along rows of about ``WIDE_ROW`` elements, not of C (7
    channels at 256 px: 3x faster). None for NCHW ``x``."""
    if not _channels_last_only(x):
        return None
    batch, channels, height, width = x.shape
    repeats = 1 << max(0, (WIDE_ROW // channels).bit_length() - 1)
    while (height * width) % repeats:
        repeats //= 2
    return x.permute(0, 2, 3, 1).reshape(batch, height * width // repeats, repeats * channels)


def _position_sums(x: torch.Tensor, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and channel, the sum and the sum of squares of ``x`` over the positions: (B, C) each, fp32."""
    if rows is None:
        flat = x.flatten(2).float()
        return flat.sum(2), torch.linalg.vecdot(flat, flat)
    batch, channels = x.shape[:2]
    sums = rows.float().sum(1).view(batch, -1, channels).sum(1)
    # The squares as the diagonal of the (B, HW, C) view's Gram matrix (one fast matrix product) beat a
    # strided reduction of x * x.
    positions = x.permute(0, 2, 3, 1).flatten(1, 2).float()
    squares = torch.bmm(positions.transpose(1, 2), positions).diagonal(dim1=1, dim2=2)
    return sums, squares


def scaled_norm(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float) -> torch.Tensor:
    """``scale * instance_norm(x) + shift`` with scale and shift (C,) or (B, C), as one multiply-add.

    The statistics are computed in fp32 (also under autocast), for NCHW and channels-last ``x``.
    """
    rows = _wide_rows(x)
    sums, squares = _position_sums(x, rows)
    count = x.shape[2] * x.shape[3]
    mean = sums / count
    var = (squares / count - mean * mean).clamp_min(0)
    mean, var = mean.to(x.dtype), var.to(x.dtype)
    scale = scale.expand_as(mean) * torch.rsqrt(var + eps)  # B x C
    shift = shift.expand_as(mean) - mean * scale
    if rows is None:
        return torch.addcmul(shift[..., None, None], x, scale[..., None, None])
    repeats = rows.shape[2] // x.shape[1]
    out = torch.addcmul(shift.repeat(1, repeats)[:, None], rows, scale.repeat(1, repeats)[:, None])
    batch, channels, height, width = x.shape
    return out.view(batch, height, width, channels).permute(0, 3, 1, 2)


def branch_norm(norm: nn.InstanceNorm2d, x: torch.Tensor, branch: int, groups: int) -> torch.Tensor:
    rows = _branch_rows(norm.num_features, branch, groups)
    return scaled_norm(x, norm.weight[rows], norm.bias[rows], norm.eps)


def average_pool(x: torch.Tensor) -> torch.Tensor:
    """``F.avg_pool2d(x, 2)``; for a channels-last ``x`` as two adds of contiguous halves (rows, then
    column pairs), 3x faster than the pooling kernel at 7 channels and 256 px."""
    if not _channels_last_only(x) or x.shape[-1] % 2 or x.shape[-2] % 2:
        return F.avg_pool2d(x, 2)
    batch, channels, height, width = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(batch, height // 2, 2, width // 2, 2 * channels)
    pairs = (rows[:, :, 0] + rows[:, :, 1]).view(batch, height // 2, width // 2, 2, channels)
    return (pairs[..., 0, :] + pairs[..., 1, :]).mul_(0.25).permute(0, 3, 1, 2)


def _merge(skip: torch.Tensor, residual_over_sqrt2: torch.Tensor) -> torch.Tensor:
    """``(skip + residual) / sqrt(2)`` in one pass into the residual (its last convolution's own
    output, already scaled)."""
    return residual_over_sqrt2.add_(skip, alpha=INV_SQRT2)


def _merge_upsampled(skip: torch.Tensor, residual_over_sqrt2: torch.Tensor) -> torch.Tensor:
    """``_merge(nearest_2x_upsample(skip), residual)``; for channels-last tensors as one broadcast add
    of each skip position to its 2 x 2 residual positions, without the upsampled copy."""
    if not (_channels_last_only(skip) and _channels_last_only(residual_over_sqrt2)):
        return _merge(F.interpolate(skip, scale_factor=2, mode="nearest"), residual_over_sqrt2)
    batch, channels, height, width = skip.shape
    cells = residual_over_sqrt2.permute(0, 2, 3, 1).view(batch, height, 2, width, 2, channels)
    cells.add_(skip.permute(0, 2, 3, 1)[:, :, None, :, None], alpha=INV_SQRT2)
    return residual_over_sqrt2


def resblk_branch(block: ResBlk, x: torch.Tensor, branch: int, groups: int) -> torch.Tensor:
    """``block.forward`` of one branch's features."""
    # Activations in place wherever their input is a fresh tensor of this block: on a CPU an in-place
    # pass over 7 channels at 256 px is about 2x faster than one that writes a new tensor.
    h = F.leaky_relu_(branch_norm(block.norm1, x, branch, groups), 0.2) if block.normalize else F.leaky_relu(x, 0.2)
    h = branch_conv(block.conv1, h, branch, groups)
    if block.downsample:
        h = average_pool(h)
    if block.normalize:
        h = branch_norm(block.norm2, h, branch, groups)
    h = branch_conv(block.conv2, F.leaky_relu_(h, 0.2), branch, groups, INV_SQRT2)
    # The 1x1 shortcut commutes with the average pooling: applied after it, on a quarter of the positions.
    skip = average_pool(x) if block.downsample else x
    if block.shortcut is not None:
        skip = branch_conv(block.shortcut, skip, branch, groups)
    return _merge(skip, h)


def adain_params(norm: AdaIN, style: torch.Tensor) -> torch.Tensor:
    """The AdaIN's (1 + gamma, beta) of every branch: B x groups x 2 x C."""
    params = norm.fc(style).view(-1, norm.groups, 2, norm.channels)
    return torch.stack([1 + params[:, :, 0], params[:, :, 1]], dim=2)


def adain_resblk_branch(block: AdainResBlk, x: torch.Tensor, params1: torch.Tensor, params2: torch.Tensor,
                        branch: int, groups: int) -> torch.Tensor:
    """``block.forward`` of one branch's features; ``params1``/``params2`` from ``adain_params``."""
    eps = block.norm1.norm.eps
    h = F.leaky_relu_(scaled_norm(x, params1[:, branch, 0], params1[:, branch, 1], eps), 0.2)
    if block.upsample:
        h = upsampled_branch_conv(block.conv1, h, branch, groups)
    else:
        h = branch_conv(block.conv1, h, branch, groups)
    h = F.leaky_relu_(scaled_norm(h, params2[:, branch, 0], params2[:, branch, 1], eps), 0.2)
    h = branch_conv(block.conv2, h, branch, groups, INV_SQRT2)
    # The 1x1 shortcut commutes with nearest upsampling: applied first, on a quarter of the positions.
    skip = branch_conv(block.shortcut, x, branch, groups) if block.shortcut is not None else x
    return _merge_upsampled(skip, h) if block.upsample else _merge(skip, h)
