"""Random views of the images the explained classifier judges during decomposition training.

A generator trained against one classifier can meet the neutral target with a pattern that this
one network reads as "no class" (an adversarial perturbation) while the class evidence stays for
every other classifier. Such patterns are brittle: a shift by a pixel or two, a mirror image or a
little noise undoes them, where true class evidence survives all three. Judging random views of
the fakes (expectation over transformations) leaves the generator only changes that hold for all
of them (``decomposition.view_shift``, ``view_flip``, ``view_noise``; docs/experiments.md has the
measurements).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def random_views(images: torch.Tensor, shift: int = 0, flip: bool = False, noise: float = 0.0) -> torch.Tensor:
    """Per image of ``images`` (B, C, H, W): a translation by up to ``shift`` pixels each way (reflect
    padding), a horizontal mirror with probability 1/2 (``flip``) and Gaussian noise of std ``noise``;
    differentiable in ``images``, the identity when all three are off."""
    batch, _, height, width = images.shape
    if shift > 0:
        padded = F.pad(images, (shift, shift, shift, shift), mode="reflect")
        offsets = torch.randint(0, 2 * shift + 1, (2, batch, 1), device=images.device)
        rows = offsets[0] + torch.arange(height, device=images.device)  # B x H
        columns = offsets[1] + torch.arange(width, device=images.device)  # B x W
        index = torch.arange(batch, device=images.device).view(batch, 1, 1)
        images = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], columns[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        mirrored = torch.rand(batch, device=images.device) < 0.5
        images = torch.where(mirrored.view(batch, 1, 1, 1), images.flip(-1), images)
    if noise > 0:
        images = images + noise * torch.randn_like(images)
    return images
