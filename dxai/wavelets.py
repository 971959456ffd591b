"""The discrete wavelet transform and the wavelet-mask shapes shared by CartoonX, the mask
predictor and the evaluation.

Coefficients and masks are *band lists*, in the order pytorch_wavelets uses::

    [low-pass (N, C, h, w), level 1 = finest (N, C, 3, h_1, w_1), ..., level J (N, C, 3, h_J, w_J)]

where the 3 of a high-pass band are its orientations (LH, HL, HH). A CartoonX mask has the
same bands with one channel (``C = 1``): one entry per position, level and orientation,
shared across colour channels, so it broadcasts against the coefficients of colour and
greyscale images alike. ``flatten_mask`` turns a mask into one vector per image (to rank
coefficients, or as the output of a network head) and ``unflatten_mask`` turns it back.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from pytorch_wavelets import DWTForward, DWTInverse
from torch import nn
from torch.nn import functional as F

from dxai.errors import DXAIError
from dxai.layout import pixel_shuffle_2x

DEFAULT_WAVELET = "db3"
DEFAULT_MODE = "zero"
PAPER_LEVELS = 5
PADDING_MODES = ("zero", "symmetric", "reflect", "periodization")

Bands = list[torch.Tensor]
Shapes = list[tuple[int, ...]]
ImageSize = int | tuple[int, int]


def _side_lengths(img_size: ImageSize) -> tuple[int, int]:
    return (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))


def max_levels(img_size: ImageSize) -> int:
    """The most levels (J) an image supports: each level halves the resolution, down to 1 px."""
    return int(math.floor(math.log2(min(_side_lengths(img_size)))))


def default_levels(img_size: ImageSize) -> int:
    """The paper's J = 5 at 256 px and one level fewer per halving of the size (J = 3 at 32 px).

    The coarsest level then describes blocks of an eighth to a quarter of the image side.
    """
    return min(PAPER_LEVELS, max(1, max_levels(img_size) - 2))


def check_levels(levels: int, img_size: ImageSize) -> None:
    """Raise a ValueError (``DXAIError``) when ``levels`` does not fit images of ``img_size``."""
    height, width = _side_lengths(img_size)
    limit = max_levels((height, width))
    if not 1 <= levels <= limit:
        raise DXAIError(f"a {height}x{width} image supports 1 to {limit} wavelet levels, not J={levels}; "
                        f"the maximum J for this size is {limit}")


class WaveletTransform(nn.Module):
    """The 2-D DWT and its inverse on band lists, with pytorch_wavelets' filter banks.

    Both directions fold the colour channels into the batch, so that the filters act on
    single-channel images. The inverse, which CartoonX runs on every noise sample of every
    step, is computed in polyphase form (``polyphase_synthesis_kernel``): per level one dense
    4 -> 4 channel convolution and a pixel shuffle, the finest level one transposed convolution.
    It equals ``DWTInverse`` up to float rounding and runs forward and backward 1.5 to 2 times
    faster on CPU (32 to 256 px). The 'periodization' mode, whose boundary wraps around, and
    odd-length filters use ``DWTInverse`` itself.
    """

    def __init__(self, levels: int, wavelet: str = DEFAULT_WAVELET, mode: str = DEFAULT_MODE):
        super().__init__()
        if mode not in PADDING_MODES:
            raise DXAIError(f"unknown wavelet padding mode {mode!r}; choose one of {PADDING_MODES}")
        self.levels, self.wavelet, self.mode = levels, wavelet, mode
        self.forward_dwt = DWTForward(J=levels, wave=wavelet, mode=mode)
        self.inverse_dwt = DWTInverse(wave=wavelet, mode=mode)
        polyphase = mode != "periodization" and self.inverse_dwt.g0_col.numel() % 2 == 0
        self.register_buffer("synthesis_kernel", polyphase_synthesis_kernel(self.inverse_dwt) if polyphase else None)

    def decompose(self, images: torch.Tensor) -> Bands:
        """(N, C, H, W) images -> band list of coefficients."""
        check_levels(self.levels, tuple(images.shape[-2:]))
        n, c = images.shape[:2]
        low, highs = self.forward_dwt(images.reshape(n * c, 1, *images.shape[-2:]))
        return [low.reshape(n, c, *low.shape[2:])] + [high.reshape(n, c, *high.shape[2:]) for high in highs]

    def reconstruct(self, bands: Bands, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Band list of coefficients -> (N, C, H, W) images (the inverse DWT).

        An odd side inverts to one pixel more than the image had; ``size`` crops to (H, W).
        """
        n, c = bands[0].shape[:2]
        low = bands[0].reshape(n * c, 1, *bands[0].shape[2:])
        highs = [high.reshape(n * c, 1, *high.shape[2:]) for high in bands[1:]]
        if self.synthesis_kernel is None:
            images = self.inverse_dwt((low, highs))
            images = images.reshape(n, c, *images.shape[-2:])
        else:
            images = _polyphase_inverse(low, highs, self.synthesis_kernel, c)
        return images if size is None else images[..., : size[0], : size[1]]

    def mask_shapes(self, img_size: ImageSize) -> Shapes:
        """Per-image mask shapes: ``[(1, h, w), (1, 3, h_1, w_1), ..., (1, 3, h_J, w_J)]``."""
        return mask_shapes(img_size, self.levels, self.wavelet, self.mode)


def polyphase_synthesis_kernel(inverse_dwt: DWTInverse) -> torch.Tensor:
    """The 4 -> 4 channel correlation kernel (4, 4, T, T), T = filter length / 2, of one level
    of ``inverse_dwt`` outside 'periodization' mode.

    pytorch_wavelets synthesises a level with transposed convolutions of stride 2, filters
    g of even length 2T and cropping padding 2T - 2: output sample 2i + p along an axis is
    sum_t x[i + t] * g[2 (T - 1 - t) + p], a valid correlation of the input with the flipped
    phase-p taps of g. Both axes at once: input channels are the bands (LL, LH, HL, HH),
    output channel 2 p_h + p_w is the phase (p_h, p_w), and a pixel shuffle interleaves them.
    """
    def phases(taps: torch.Tensor) -> torch.Tensor:   # (2, T): phase p -> flipped taps g[2t + p]
        taps = taps.flatten().double()
        return torch.stack([taps[0::2].flip(0), taps[1::2].flip(0)])

    low_h, high_h = phases(inverse_dwt.g0_col), phases(inverse_dwt.g1_col)
    low_w, high_w = phases(inverse_dwt.g0_row), phases(inverse_dwt.g1_row)
    # pytorch_wavelets' band order: LH is high-pass along the height, HL along the width.
    band_filters = [(low_h, low_w), (high_h, low_w), (low_h, high_w), (high_h, high_w)]
    taps = low_h.shape[1]
    kernel = torch.zeros(4, 4, taps, taps, dtype=torch.float64)
    for band, (height_phases, width_phases) in enumerate(band_filters):
        for phase_h in range(2):
            for phase_w in range(2):
                kernel[2 * phase_h + phase_w, band] = torch.outer(height_phases[phase_h], width_phases[phase_w])
    return kernel.to(inverse_dwt.g0_col.dtype)


def transposed_synthesis_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """The polyphase ``kernel`` (4, 4, T, T) as the kernel (4, 1, 2T, 2T) of the stride-2 transposed
    convolution (padding 2T - 2) that synthesises one level: band b's 2-D filter, whose tap (2t + p_h,
    2u + p_w) is the polyphase kernel's phase (p_h, p_w) tap (T - 1 - t, T - 1 - u)."""
    taps = kernel.shape[-1]
    filters = kernel.view(2, 2, 4, taps, taps).permute(2, 3, 0, 4, 1).flip(1, 3)
    return filters.reshape(4, 1, 2 * taps, 2 * taps)


def _polyphase_inverse(low: torch.Tensor, highs: list[torch.Tensor], kernel: torch.Tensor,
                       channels: int) -> torch.Tensor:
    """``DWTInverse`` of (N * C, 1, h, w) low-pass and (N * C, 1, 3, h_j, w_j) high-pass bands, as
    (N, C, H, W) images in channels-last memory (``channels`` = C), which the classifier takes."""
    image = low
    for high in reversed(highs[1:]):  # every level but the finest, coarsest first
        # Like DWTInverse: drop the extra row/column an odd-sized level leaves on the low-pass.
        image = image[..., : high.shape[-2], : high.shape[-1]]
        # Channels-last puts a position's 4 bands side by side: oneDNN's convolution then runs
        # forward and backward 2 to 4 times faster than on 4-channel NCHW (docs/experiments.md).
        # Concatenated along the last axis of the (M, h, w, bands) view: one copy, already channels-last.
        bands = torch.cat([image.permute(0, 2, 3, 1), high.flatten(1, 2).permute(0, 2, 3, 1)], dim=3)
        image = pixel_shuffle_2x(F.conv2d(bands.permute(0, 3, 1, 2), kernel))
    finest = highs[0]
    return _last_level_inverse(image[..., : finest.shape[-2], : finest.shape[-1]], finest, kernel, channels)


def _last_level_inverse(low: torch.Tensor, high: torch.Tensor, kernel: torch.Tensor, channels: int) -> torch.Tensor:
    """The finest level of ``_polyphase_inverse``, as one transposed convolution with a group per colour
    channel that writes the (N, C, H, W) channels-last images itself: forward and backward 1.6 times
    faster than the polyphase convolution and the pixel shuffle that gathers the channels (though
    slower forward only; 256 px, 64 images, docs/experiments.md)."""
    count, _, height, width = low.shape
    images = count // channels
    low = low.reshape(images, channels, 1, height, width)
    high = high.reshape(images, channels, 3, height, width)
    # (N, h, w, C, bands): each colour channel's 4 bands side by side, one copy, channels-last.
    bands = torch.cat([low.permute(0, 3, 4, 1, 2), high.permute(0, 3, 4, 1, 2)], dim=4)
    bands = bands.flatten(3).permute(0, 3, 1, 2)
    filters = transposed_synthesis_kernel(kernel).repeat(channels, 1, 1, 1)
    taps = kernel.shape[-1]
    return F.conv_transpose2d(bands, filters, stride=2, padding=2 * taps - 2, groups=channels)


def mask_shapes(img_size: ImageSize, levels: int | None = None, wavelet: str = DEFAULT_WAVELET,
                mode: str = DEFAULT_MODE) -> Shapes:
    """The shapes, without batch dimension, of a CartoonX mask for images of ``img_size``.

    ``levels`` defaults to ``default_levels(img_size)``. The shapes are read off the transform
    of a single-channel zero image, so they always agree with pytorch_wavelets.
    """
    height, width = _side_lengths(img_size)
    levels = default_levels((height, width)) if levels is None else levels
    check_levels(levels, (height, width))
    return list(_transform_shapes(height, width, levels, wavelet, mode))


@lru_cache(maxsize=64)
def _transform_shapes(height: int, width: int, levels: int, wavelet: str, mode: str) -> tuple:
    low, highs = DWTForward(J=levels, wave=wavelet, mode=mode)(torch.zeros(1, 1, height, width))
    return tuple(tuple(band.shape[1:]) for band in [low, *highs])


def mask_size(shapes: Shapes) -> int:
    """The number of entries of one image's mask."""
    return sum(math.prod(shape) for shape in shapes)


def ones_mask(shapes: Shapes, batch_size: int, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> Bands:
    """The all-ones mask, CartoonX's initial mask: every coefficient kept."""
    return [torch.ones(batch_size, *shape, device=device, dtype=dtype) for shape in shapes]


def apply_mask(coefficients: Bands, mask: Bands) -> Bands:
    """Multiply coefficients (N, C, ...) by a mask (N, 1, ...) band by band."""
    return [band * band_mask for band, band_mask in zip(coefficients, mask, strict=True)]


def flatten_mask(mask: Bands) -> torch.Tensor:
    """Band list (N, 1, ...) -> (N, K), the bands concatenated in order."""
    return torch.cat([band.flatten(1) for band in mask], dim=1)


def unflatten_mask(flat: torch.Tensor, shapes: Shapes) -> Bands:
    """(N, K) -> band list of ``shapes``; the inverse of ``flatten_mask``."""
    if flat.dim() != 2 or flat.shape[1] != mask_size(shapes):
        raise DXAIError(f"a flat mask for these shapes is (N, {mask_size(shapes)}), not {tuple(flat.shape)}")
    pieces = flat.split([math.prod(shape) for shape in shapes], dim=1)
    return [piece.reshape(flat.shape[0], *shape) for piece, shape in zip(pieces, shapes)]
