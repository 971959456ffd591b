"""Scores of a decomposition against the synthetic data's own layers: image = background + class part.

No natural image tells which of its pixels make its class; a synthetic one does, so every
method's parts are scored directly, in ways a trivial answer cannot pass (the zero part, the
image itself and the true part are reference rows of the scoreboard):

- ``distinct_error``: sum ||psi_distinct - class_part||^2 / sum ||class_part||^2 over the images
  that have a class part (0 perfect, 1 for the zero part);
- ``distinct_corr``: the mean Pearson correlation with the class part. Any heatmap part w * x
  correlates with it, because x contains it: read it beside the error;
- ``energy_inside``: the fraction of psi_distinct's energy (sum of squares) inside the class
  part's support;
- ``null_energy``: on images whose class part is zero, ||psi_distinct||^2 / ||x - mean(x)||^2
  (a good method leaves them alone);
- ``agnostic_psnr``: PSNR of psi_agnostic against the true background, in dB.

Parts, images and layers are in the classifier's domain (ratios do not depend on the scale).
``ground_truth_sums`` gives one batch's sums (tensors, so training can reduce them across DDP
ranks); ``ground_truth_scores`` turns summed sums into the scores.
"""

from __future__ import annotations

import torch

from dxai.measures.decomposition import class_part_corr, has_class_part, psnr
from dxai.normalization import Normalization

SUM_KEYS = ("error_num", "error_den", "corr_sum", "corr_count", "inside", "present_energy", "null_num", "null_den",
            "psnr_sum", "count")


def _energy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.double().pow(2).flatten(1).sum(1)


def centred_energy(images: torch.Tensor) -> torch.Tensor:
    """||x - mean(x)||^2 per image (B): how much there is to change in an image."""
    flat = images.double().flatten(1)
    return (flat - flat.mean(1, keepdim=True)).pow(2).sum(1)


@torch.no_grad()
def ground_truth_sums(images: torch.Tensor, distinct: torch.Tensor, agnostic: torch.Tensor, class_part: torch.Tensor,
                      background: torch.Tensor, normalization: Normalization) -> dict[str, torch.Tensor]:
    """One batch's sums of every score's numerator and denominator (float64 scalars)."""
    device = distinct.device
    images, agnostic = images.to(device), agnostic.to(device)
    class_part, background = class_part.to(device), background.to(device)
    present = has_class_part(class_part)
    support = (class_part.abs().amax(1, keepdim=True) > 0).expand_as(class_part)
    energy = _energy(distinct)
    agnostic01 = normalization.denormalize(agnostic).clamp(0, 1)
    return {
        "error_num": _energy(distinct - class_part)[present].sum(),
        "error_den": _energy(class_part)[present].sum(),
        "corr_sum": class_part_corr(distinct, class_part).double().sum(),
        "corr_count": present.double().sum(),
        "inside": _energy(distinct * support)[present].sum(),
        "present_energy": energy[present].sum(),
        "null_num": energy[~present].sum(),
        "null_den": centred_energy(images)[~present].sum(),
        "psnr_sum": psnr(agnostic01, normalization.denormalize(background)).double().sum(),
        "count": torch.tensor(float(len(distinct)), dtype=torch.float64, device=device),
    }


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def ground_truth_scores(sums: dict[str, torch.Tensor]) -> dict[str, float | None]:
    """The scores of summed ``ground_truth_sums``; None where no image could be scored."""
    s = {key: float(sums[key]) for key in SUM_KEYS}
    return {"distinct_error": _ratio(s["error_num"], s["error_den"]),
            "distinct_corr": _ratio(s["corr_sum"], s["corr_count"]),
            "energy_inside": _ratio(s["inside"], s["present_energy"]),
            "null_energy": _ratio(s["null_num"], s["null_den"]),
            "agnostic_psnr": _ratio(s["psnr_sum"], s["count"])}


class GroundTruthScores:
    """``ground_truth_sums`` summed over the batches added so far; ``result`` gives the scores."""

    def __init__(self, normalization: Normalization):
        self.normalization = normalization
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, images: torch.Tensor, distinct: torch.Tensor, agnostic: torch.Tensor, class_part: torch.Tensor,
            background: torch.Tensor) -> None:
        batch = ground_truth_sums(images, distinct, agnostic, class_part, background, self.normalization)
        self.sums = {key: self.sums.get(key, 0) + value.cpu() for key, value in batch.items()}

    def result(self) -> dict[str, float | None]:
        return ground_truth_scores(self.sums)
