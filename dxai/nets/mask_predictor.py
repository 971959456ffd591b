"""The amortized CartoonX mask predictor: image and class -> full wavelet mask, in one pass.

A small U-Net. The encoder halves the resolution once per wavelet level (its first
convolution already has stride 2: no mask lives at full resolution); the decoder climbs back
up with skip connections, so the features at level j (1/2**j of the image side, the
spacing of the coefficients of wavelet level j) see the whole image. One head per band map
reads the mask off them:

    decoder level j (j = 1 finest .. J) -> the 3 orientation maps of wavelet level j
    decoder level J                     -> the low-pass map

A head samples its features where its coefficients lie in the image (``band_grids``), so
that one coefficient reads one feature vector. Where they lie is not where a resize would
put them: the filters' zero padding adds coefficients beyond the image, and Daubechies
filters are asymmetric, so a coefficient filtered last by the low-pass filter sits about a
coefficient step away from one filtered by the high-pass filter at level 3. Beyond the image
a head reads the border's features plus one more channel, the distance beyond the image in
coefficient steps (times BEYOND_GAIN, so that its single weight learns about as fast as the
weights of a whole feature vector): without it, every kept border coefficient would be
copied outwards. The band shapes are exactly those of ``dxai.wavelets.mask_shapes``. Each
head has one output map per class and the class to explain picks its map. With
``coefficient_inputs`` a head also reads, at each of its entries, the image's wavelet coefficient
there (per colour channel, standardised by the band's mean and std, and its absolute value): what
the entry trades against l1 is how far that coefficient lies from the noise that replaces it, which
the U-Net's pixel features would have to learn the transform to see (``masks.coefficient_inputs``;
docs/experiments.md has the measurements).

Mask values are sigmoids stretched to (-STRETCH, 1 + STRETCH) and clamped to [0, 1]: RDE
optima keep very few coefficients, and a plain sigmoid's floor (e.g. 0.007 at logit -5) on
every entry would cost more l1 than the whole optimal mask. The clamp passes gradients
straight through, so that an entry clamped to 0 can come back when keeping it would lower
the distortion (``abs`` has zero gradient at 0: the l1 term does not push it further). The
heads start at zero weights and the bias that gives ``initial_keep``: a fresh predictor keeps
nearly every coefficient, the risk-averse start that CartoonX's all-ones mask also makes.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pywt
import torch
from torch import nn
from torch.nn import functional as F

from dxai.wavelets import (
    DEFAULT_MODE,
    DEFAULT_WAVELET,
    Bands,
    ImageSize,
    WaveletTransform,
    check_levels,
    mask_shapes,
)

STRETCH = 0.1
BEYOND_GAIN = 8.0
# The last filter along (height, width) of each high-pass orientation in pytorch_wavelets'
# order (LH, HL, HH); True is the high-pass filter.
ORIENTATION_FILTERS = ((True, False), (False, True), (True, True))


def axis_positions(length: int, band_lengths: list[int], wavelet: str) -> list[dict[bool, np.ndarray]]:
    """Pixel positions along one image axis of the coefficients of levels 1..J.

    For level j, ``{False: positions if filtered last by the low-pass filter, True: ... by the
    high-pass filter}``. pytorch_wavelets computes coefficient k of level j from inputs
    2k - pad // 2 + t of level j - 1 (t over the filter taps, ``pad`` its padding); the
    position is that window's centre, weighted by the absolute filter taps.
    """
    filters = pywt.Wavelet(wavelet)
    taps = np.arange(len(filters.dec_lo))

    def centre(taps_of_filter) -> float:
        weights = np.abs(np.asarray(taps_of_filter)[::-1])
        return float((weights * taps).sum() / weights.sum())

    centres = {False: centre(filters.dec_lo), True: centre(filters.dec_hi)}
    positions, offset, size = [], 0.0, length
    for level, count in enumerate(band_lengths, start=1):
        pad = 2 * (count - 1) - size + len(taps)
        scale = 2 ** (level - 1)
        level_offsets = {high: scale * (centres[high] - pad // 2) + offset for high in (False, True)}
        positions.append({high: 2**level * np.arange(count) + level_offsets[high] for high in (False, True)})
        offset, size = level_offsets[False], count
    return positions


@lru_cache(maxsize=32)
def band_grids(height: int, width: int, levels: int, wavelet: str, mode: str) -> tuple:
    """Per band map (low-pass, then level 1 orientations 0..2, ..., level J), the
    ``grid_sample`` coordinates of its coefficients (1, h, w, 2) and their distance beyond the
    image in coefficient steps (1, 1, h, w)."""
    shapes = mask_shapes((height, width), levels, wavelet, mode)
    rows = axis_positions(height, [shape[-2] for shape in shapes[1:]], wavelet)
    columns = axis_positions(width, [shape[-1] for shape in shapes[1:]], wavelet)

    def grid(level: int, high_rows: bool, high_columns: bool) -> tuple[torch.Tensor, torch.Tensor]:
        y, x = np.meshgrid(rows[level - 1][high_rows], columns[level - 1][high_columns], indexing="ij")
        coordinates = np.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], axis=-1)
        beyond = sum(np.maximum(0, -0.5 - p) + np.maximum(0, p - (side - 0.5)) for p, side in ((x, width), (y, height)))
        return (torch.tensor(coordinates, dtype=torch.float32).unsqueeze(0),
                torch.tensor(beyond / 2**level, dtype=torch.float32).view(1, 1, *beyond.shape))

    maps = [grid(levels, False, False)]
    maps += [grid(level, *filters) for level in range(1, levels + 1) for filters in ORIENTATION_FILTERS]
    return tuple(maps)


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


class ConvBlock(nn.Sequential):
    """3x3 convolution, group norm, SiLU; ``stride`` 2 halves the resolution."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
                         nn.GroupNorm(_groups(out_channels), out_channels), nn.SiLU())


class UpBlock(nn.Module):
    """Upsample the coarser features to the skip's size, concatenate, convolve."""

    def __init__(self, coarse_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.fuse = ConvBlock(coarse_channels + skip_channels, out_channels)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        coarse = F.interpolate(coarse, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([coarse, skip], dim=1))


class BandHead(nn.Module):
    """One band map per class, read off features sampled at the band's coefficients."""

    def __init__(self, in_channels: int, num_classes: int, initial_keep: float, coefficient_channels: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 1 + coefficient_channels, num_classes, 1)
        nn.init.zeros_(self.conv.weight)
        probability = (initial_keep + STRETCH) / (1 + 2 * STRETCH)
        nn.init.constant_(self.conv.bias, math.log(probability / (1 - probability)))

    def forward(self, features: torch.Tensor, target: torch.Tensor, grid: torch.Tensor,
                beyond: torch.Tensor, coefficients: torch.Tensor | None = None) -> torch.Tensor:
        """features (B, C, h, w), target (B,), the band's grid (1, h', w', 2), beyond
        (1, 1, h', w') and optionally per-coefficient inputs (B, K, h', w') -> (B, 1, h', w') in [0, 1].

        Computed as the 1x1 convolution of [sampled features, beyond, coefficients] followed by the target's
        map, but only the target's row of the convolution, and the features projected onto it before the
        sampling (both are linear): one channel is sampled instead of C, forward and backward.
        """
        batch, channels = features.shape[:2]
        weight = self.conv.weight[target].flatten(1)  # (B, C + 1 + K)
        projected = torch.einsum("bc,bchw->bhw", weight[:, :channels], features).unsqueeze(1)
        logits = F.grid_sample(projected, grid.expand(batch, -1, -1, -1), mode="bilinear", padding_mode="border",
                               align_corners=False)
        logits = logits + (BEYOND_GAIN * weight[:, channels]).view(-1, 1, 1, 1) * beyond
        if coefficients is not None:
            logits = logits + torch.einsum("bk,bkhw->bhw", weight[:, channels + 1:], coefficients).unsqueeze(1)
        logits = logits + self.conv.bias[target].view(-1, 1, 1, 1)
        values = torch.sigmoid(logits) * (1 + 2 * STRETCH) - STRETCH
        return values + (values.clamp(0, 1) - values).detach()


class MaskPredictor(nn.Module):
    """``MaskPredictor(img_size, ...)(images, target)`` -> CartoonX mask band list.

    ``images`` (B, C, H, W) in [0, 1], as CartoonX sees them; ``target`` (B,) the classes to
    explain. The mask is ``[(B, 1, h, w), (B, 1, 3, h_1, w_1), ..., (B, 1, 3, h_J, w_J)]`` with
    the shapes of ``mask_shapes(img_size, levels, wavelet, mode)``, values in [0, 1]. Images of
    another size get the masks of their own size.
    """

    def __init__(self, img_size: ImageSize, channels: int, num_classes: int, levels: int,
                 wavelet: str = DEFAULT_WAVELET, mode: str = DEFAULT_MODE, base_channels: int = 16,
                 max_channels: int = 128, initial_keep: float = 0.95, coefficient_inputs: bool = False):
        # coefficient_inputs defaults to False, the architecture of bundles exported before it existed
        super().__init__()
        check_levels(levels, img_size)
        self.img_size, self.channels, self.num_classes = img_size, channels, num_classes
        self.levels, self.wavelet, self.mode = levels, wavelet, mode
        widths = [min(base_channels * 2**level, max_channels) for level in range(levels)]  # levels 1..J
        in_widths = [channels, *widths[:-1]]
        self.down = nn.ModuleList(nn.Sequential(ConvBlock(in_width, width, stride=2), ConvBlock(width, width))
                                  for in_width, width in zip(in_widths, widths))
        self.context = nn.Sequential(ConvBlock(widths[-1], widths[-1]), ConvBlock(widths[-1], widths[-1]))
        self.up = nn.ModuleList(UpBlock(widths[j + 1], widths[j], widths[j]) for j in range(levels - 1))
        self.coefficient_inputs = coefficient_inputs
        extra = 2 * channels if coefficient_inputs else 0
        self.low_head = BandHead(widths[-1], num_classes, initial_keep, extra)
        self.high_heads = nn.ModuleList(nn.ModuleList(BandHead(width, num_classes, initial_keep, extra)
                                                      for _ in ORIENTATION_FILTERS) for width in widths)

    def forward(self, images: torch.Tensor, target: torch.Tensor) -> Bands:
        grids = [(grid.to(images.device, images.dtype), beyond.to(images.device, images.dtype))
                 for grid, beyond in band_grids(*images.shape[-2:], self.levels, self.wavelet, self.mode)]
        encoded = []                                      # encoded[j - 1]: level j
        for down in self.down:
            encoded.append(down(encoded[-1] if encoded else images))
        decoded = [self.context(encoded[-1])]            # level J, then J - 1, ..., 1
        for j in range(self.levels - 2, -1, -1):
            decoded.append(self.up[j](decoded[-1], encoded[j]))
        decoded = decoded[::-1]                           # decoded[j - 1]: level j
        coefficients = [None] * len(grids)                # per band map, in the order of ``grids``
        if self.coefficient_inputs:
            low_features, *high_features = self.coefficient_features(images)
            coefficients = [low_features] + [level[:, :, orientation] for level in high_features
                                             for orientation in range(len(ORIENTATION_FILTERS))]
        low = self.low_head(decoded[-1], target, *grids[0], coefficients[0])
        highs = [torch.stack([head(features, target, *grids[1 + 3 * level + orientation],
                                   coefficients[1 + 3 * level + orientation])[:, 0]
                              for orientation, head in enumerate(heads)], dim=1).unsqueeze(1)
                 for level, (heads, features) in enumerate(zip(self.high_heads, decoded, strict=True))]
        return [low, *highs]

    def coefficient_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """What the heads read beside the U-Net's features, per band map: each coefficient of
        ``images`` standardised by its band's mean and std (those of CartoonX's adaptive noise) and
        its absolute value, per colour channel: (B, 2C, h, w) for the low-pass, (B, 2C, 3, h_j, w_j)
        for level j. How far a coefficient lies from the noise that replaces it when it is dropped
        is what its mask entry trades against l1, and the U-Net sees pixels only."""
        features = []
        for band in _transform(self.levels, self.wavelet, self.mode, images.device, images.dtype).decompose(images):
            flat, shape = band.flatten(1), (len(band),) + (1,) * (band.dim() - 1)
            standardised = (band - flat.mean(1).view(shape)) / (flat.std(1, correction=0).view(shape) + 1e-8)
            features.append(torch.cat([standardised, standardised.abs()], dim=1))
        return features


@lru_cache(maxsize=8)
def _transform(levels: int, wavelet: str, mode: str, device: torch.device, dtype: torch.dtype) -> WaveletTransform:
    """The wavelet transform of ``coefficient_features``, kept out of the module's state (nothing in it is learnt)."""
    return WaveletTransform(levels, wavelet, mode).to(device, dtype)
