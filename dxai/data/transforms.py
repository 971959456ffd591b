"""Image transforms (albumentations) and the normalisation every later stage must invert.

Models see images normalised to [-1, 1] (mean 0.5, std 0.5 per channel). ``Normalization``
records that mapping so that explainers working in [0, 1] (CartoonX) and the exported
bundle can convert both ways.
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import numpy as np
import torch


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def symmetric(cls, channels: int) -> "Normalization":
        """The [0, 1] -> [-1, 1] mapping used throughout dxai."""
        return cls(mean=(0.5,) * channels, std=(0.5,) * channels)

    def _shape(self, values, like: torch.Tensor) -> torch.Tensor:
        view = [1] * like.dim()
        view[-3] = len(values)
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(view)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] image -> model domain."""
        return (x - self._shape(self.mean, x)) / self._shape(self.std, x)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model domain -> [0, 1] image."""
        return x * self._shape(self.std, x) + self._shape(self.mean, x)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """An additive layer (no offset) into the model domain."""
        return x / self._shape(self.std, x)

    def unscale(self, x: torch.Tensor) -> torch.Tensor:
        """An additive layer from the model domain back to [0, 1] units."""
        return x * self._shape(self.std, x)


def train_transform(img_size: int, normalization: Normalization) -> A.Compose:
    """StarGAN-v2's training augmentation: random resized crop half the time, flip, resize."""
    return A.Compose([
        A.RandomResizedCrop(size=(img_size, img_size), scale=(0.8, 1.0), ratio=(0.9, 1.1), p=0.5),
        A.Resize(img_size, img_size),
        A.HorizontalFlip(p=0.5),
        A.Normalize(mean=normalization.mean, std=normalization.std, max_pixel_value=255.0),
    ])


def eval_transform(img_size: int, normalization: Normalization) -> A.Compose:
    return A.Compose([
        A.Resize(img_size, img_size),
        A.Normalize(mean=normalization.mean, std=normalization.std, max_pixel_value=255.0),
    ])


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """H x W x C float array -> C x H x W tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
