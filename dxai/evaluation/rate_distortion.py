"""Rate-distortion curves of RDE masks (CartoonX paper, fig. 7a and 7b).

Coefficients (mask entries, shared across colour channels) are ordered by relevance, the
mask value, and a fraction of them is kept while the rest is replaced by the adaptive
Gaussian noise of RDE (``keep``, fig. 7a: a good explanation's distortion falls fastest),
or the most relevant fraction is randomised while the rest is kept (``randomize``, fig.
7b: a good explanation's distortion rises fastest). ``random_order`` is the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dxai.errors import DXAIError
from dxai.explain.classifier_wrapper import evaluation_mode
from dxai.explain.rde import RDEObjective, Representation
from dxai.wavelets import Bands, flatten_mask, mask_size, unflatten_mask

MODES = ("keep", "randomize")


@dataclass
class RateDistortionCurve:
    """Distortion of each image (F, B) at each fraction (F,) of kept or randomised coefficients."""

    fractions: torch.Tensor
    distortion: torch.Tensor
    mode: str

    @property
    def mean_distortion(self) -> torch.Tensor:
        return self.distortion.mean(1)


def relevance_order(masks: Bands, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of the flattened mask entries (B, K), most relevant (largest value) first.

    Optimised masks hold many exact ties (entries clamped to 0 or 1); ties come in random
    order, so that no band or position is favoured by the ordering of the flat vector.
    """
    values = flatten_mask(masks)
    shuffle = torch.stack([torch.randperm(values.shape[1], generator=generator, device=values.device)
                           for _ in range(values.shape[0])])
    ranked = torch.sort(values.gather(1, shuffle), dim=1, descending=True, stable=True).indices
    return shuffle.gather(1, ranked)


def random_order(batch_size: int, size: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """A random ordering of ``size`` mask entries per image, the baseline: (B, K)."""
    return torch.stack([torch.randperm(size, generator=generator, device=device) for _ in range(batch_size)])


def rate_distortion_curve(classifier: nn.Module, images: torch.Tensor, representation: Representation,
                          order: torch.Tensor, fractions: Sequence[float] | torch.Tensor | None = None, *,
                          mode: str = "keep", num_samples: int = 64, distortion: str = "l2",
                          target: torch.Tensor | int | Sequence[int] | None = None, seed: int = 0,
                          samples_per_call: int = 128) -> RateDistortionCurve:
    """Distortion of ``classifier`` on ``images`` (B, C, H, W in [0, 1]) when the first
    ``fraction`` of the entries in ``order`` (B, K) are kept (``mode="keep"``) or randomised
    (``mode="randomize"``) and all others are treated the other way.

    ``classifier`` takes [0, 1] images and returns logits (wrap a model with
    ``NormalizedClassifier``); ``distortion`` is an RDE measure, by default the squared l2
    distance of the softmax outputs as in the paper's figure. Every fraction uses the same
    noise (image i draws from seed ``seed + i``), so the curves differ by the masks alone.
    """
    if mode not in MODES:
        raise DXAIError(f"unknown rate-distortion mode {mode!r}; choose one of {MODES}")
    shapes = representation.mask_shapes(tuple(images.shape[-2:]))
    size = mask_size(shapes)
    if order.shape != (images.shape[0], size):
        raise DXAIError(f"the coefficient order must be (B, K) = ({images.shape[0]}, {size}), not {tuple(order.shape)}")
    fractions = torch.linspace(0, 1, 21) if fractions is None else torch.as_tensor(fractions, dtype=torch.float32)
    with evaluation_mode(classifier):
        objective = RDEObjective(classifier, images, representation, target, lam=0.0, num_samples=num_samples,
                                 distortion=distortion)
        curve = [_distortion_at(objective, order.to(images.device), fraction, shapes, mode, seed, samples_per_call)
                 for fraction in fractions.tolist()]
    return RateDistortionCurve(fractions, torch.stack(curve), mode)


def _distortion_at(objective: RDEObjective, order: torch.Tensor, fraction: float, shapes: list, mode: str,
                   seed: int, samples_per_call: int) -> torch.Tensor:
    batch_size, size = order.shape
    device, dtype = objective.reference.device, objective.coefficients[0].dtype
    chosen = torch.zeros(batch_size, size, device=device, dtype=dtype)
    chosen.scatter_(1, order[:, : int(round(fraction * size))], 1.0)
    flat = chosen if mode == "keep" else 1 - chosen
    generators = [torch.Generator(device=device).manual_seed(seed + index) for index in range(batch_size)]
    return objective.evaluate(unflatten_mask(flat, shapes), generators, samples_per_call).distortion.cpu()

