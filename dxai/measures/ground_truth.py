"""Scores of a decomposition against the synthetic data's own layers: image = background + class part.

No natural image tells which of its pixels make its class; a synthetic one does, so every
method's parts can be scored directly: the Pearson correlation of the distinct part with the
true class part (over the images that have one) and the PSNR of the agnostic part against the
true background.
"""

from __future__ import annotations

import torch

from dxai.measures.decomposition import class_part_corr, psnr
from dxai.normalization import Normalization


class GroundTruthScores:
    """Sums over the batches added so far; ``result`` gives the means."""

    def __init__(self, normalization: Normalization):
        self.normalization = normalization
        self.corr_sum = self.corr_count = self.psnr_sum = self.count = 0.0

    def add(self, distinct: torch.Tensor, agnostic: torch.Tensor, class_part: torch.Tensor,
            background: torch.Tensor) -> None:
        """All four in the classifier's domain, as the data module serves them."""
        corr = class_part_corr(distinct.cpu(), class_part.cpu())
        self.corr_sum += float(corr.sum())
        self.corr_count += len(corr)
        unit = self.normalization
        agnostic01 = unit.denormalize(agnostic.cpu()).clamp(0, 1)
        self.psnr_sum += float(psnr(agnostic01, unit.denormalize(background.cpu())).sum())
        self.count += len(distinct)

    def result(self) -> dict[str, float]:
        return {"distinct_corr": self.corr_sum / self.corr_count if self.corr_count else float("nan"),
                "agnostic_psnr": self.psnr_sum / self.count if self.count else float("nan")}
