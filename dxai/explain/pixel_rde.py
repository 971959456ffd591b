"""Pixel RDE: RDE with the identity representation, one mask entry per pixel.

Macdonald et al., "A rate-distortion framework for explaining neural network decisions"
(2019), as configured in the CartoonX paper: adaptive Gaussian noise with one mean and std
over all pixels, lambda 4, Adam lr 1e-3, 2000 steps, L = 64.
"""

from __future__ import annotations

import torch
from torch import nn

from dxai.explain.rde import RDE
from dxai.normalization import Normalization
from dxai.wavelets import Bands, ImageSize, Shapes


class PixelRepresentation(nn.Module):
    """The identity representation x = h: one band, the image itself; masks are (N, 1, H, W)."""

    def decompose(self, images: torch.Tensor) -> Bands:
        return [images]

    def reconstruct(self, bands: Bands, size: tuple[int, int] | None = None) -> torch.Tensor:
        return bands[0]

    def mask_shapes(self, img_size: ImageSize) -> Shapes:
        height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
        return [(1, int(height), int(width))]


class PixelRDE(RDE):
    """Pixel RDE explainer: ``PixelRDE(classifier).attribute(images)`` -> masks (B, H * W);
    ``explain`` -> ``Explanation`` whose ``cartoon`` is the pixel mask itself."""

    def __init__(self, classifier: nn.Module, *, normalization: Normalization | None = None,
                 lam: float = 4.0, lr: float = 1e-3, steps: int = 2000, num_samples: int = 64,
                 distortion: str = "label", samples_per_call: int = 128, class_names: list[str] | None = None):
        super().__init__(classifier, normalization=normalization, lam=lam, lr=lr, steps=steps,
                         num_samples=num_samples, distortion=distortion, samples_per_call=samples_per_call,
                         class_names=class_names)

    def representation(self, img_size: tuple[int, int]) -> PixelRepresentation:
        return PixelRepresentation()

    def visualize(self, images: torch.Tensor, masks: Bands, representation: PixelRepresentation) -> torch.Tensor:
        return masks[0].detach().clone()
