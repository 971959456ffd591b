"""The mapping between [0, 1] images and the classifier's input domain.

Models see images normalised to [-1, 1] (mean 0.5, std 0.5 per channel). ``Normalization``
records that mapping so that explainers working in [0, 1] (CartoonX) and the exported
bundle can convert both ways.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def symmetric(cls, channels: int) -> Normalization:
        """The [0, 1] -> [-1, 1] mapping used throughout dxai."""
        return cls(mean=(0.5,) * channels, std=(0.5,) * channels)

    def _shape(self, values, like: torch.Tensor) -> torch.Tensor:
        view = [1] * like.dim()
        view[-3] = len(values)
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(view)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] image -> model domain, as one multiply-add pass over ``x`` (in its memory format)."""
        shift = [-mean / std for mean, std in zip(self.mean, self.std)]
        return torch.addcmul(self._shape(shift, x), x, self._shape([1 / std for std in self.std], x))

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model domain -> [0, 1] image."""
        return x * self._shape(self.std, x) + self._shape(self.mean, x)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """An additive layer (no offset) into the model domain."""
        return x / self._shape(self.std, x)

    def unscale(self, x: torch.Tensor) -> torch.Tensor:
        """An additive layer from the model domain back to [0, 1] units."""
        return x * self._shape(self.std, x)
