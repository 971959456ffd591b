"""Accuracy and class probabilities along x_beta = x - beta * distinct (DXAI paper, eq. 10, fig. 7).

``BetaCurve`` accumulates, batch after batch, how often the classifier still labels x_beta
correctly (the accuracy curve whose normalised area is the beta-AUC of table 1), the mean
softmax vector per true class (the bars of fig. 7) and the classifier's distance from
neutrality, KL(uniform || p(x_beta)), from one classifier pass per beta.

beta-AUC rewards an x_1 = psi_agnostic that the classifier reads as *another* class (the paper's
overshoot) and punishes one that is neutral but leans, by argmax, to the true class.
``neutral_auc`` is the area over beta of KL(uniform || p(x_beta)) / KL(uniform || p(x)): lower is
better, 0 for a part whose removal makes the classifier neutral at once; an overshoot to another
class keeps it high.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dxai.measures.decomposition import BETAS, auc_of_curve


@torch.no_grad()
def beta_probabilities(classifier: nn.Module, images: torch.Tensor, distinct: torch.Tensor,
                       betas=BETAS) -> torch.Tensor:
    """softmax(C(x - beta * distinct)) for every beta: (len(betas), B, c)."""
    return torch.stack([classifier(images - beta * distinct).softmax(1) for beta in betas])


def uniform_kl(probabilities: torch.Tensor) -> torch.Tensor:
    """KL(uniform || p) over the last axis: 0 for a neutral classifier."""
    return -probabilities.clamp_min(1e-12).log().mean(-1) - np.log(probabilities.shape[-1])


def neutral_auc_of_curve(kl, betas=BETAS) -> float:
    """Area over beta in [0, 1] of KL(uniform || p(x_beta)) / KL(uniform || p(x)) (means over images,
    or sums: the ratio is the same); lower is better; NaN when p(x) is already uniform."""
    kl = np.asarray(kl, dtype=np.float64)
    if kl[0] <= 0:
        return float("nan")
    return float(np.trapezoid(kl / kl[0], np.asarray(betas)) / max(betas))


class BetaCurve:
    """Sums over the images added so far; ``accuracy``, ``auc`` and ``class_probabilities`` read them."""

    def __init__(self, num_classes: int, betas=BETAS):
        self.betas = tuple(betas)
        self.correct = torch.zeros(len(self.betas), dtype=torch.float64)
        self.probability_sums = torch.zeros(num_classes, len(self.betas), num_classes, dtype=torch.float64)
        self.class_counts = torch.zeros(num_classes, dtype=torch.float64)
        self.kl_sums = torch.zeros(len(self.betas), dtype=torch.float64)

    @property
    def count(self) -> int:
        return int(self.class_counts.sum())

    def add(self, classifier: nn.Module, images: torch.Tensor, distinct: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: ``images`` and ``distinct`` in the classifier's domain, true ``labels`` (B)."""
        probabilities = beta_probabilities(classifier, images, distinct, self.betas).double().cpu()
        labels = labels.cpu()
        self.correct += (probabilities.argmax(2) == labels).sum(1)
        self.probability_sums.index_add_(0, labels, probabilities.transpose(0, 1))
        self.class_counts += torch.bincount(labels, minlength=len(self.class_counts))
        self.kl_sums += uniform_kl(probabilities).sum(1)

    @property
    def accuracy(self) -> list[float]:
        return (self.correct / max(self.count, 1)).tolist()

    @property
    def auc(self) -> float:
        """Eq. 10's score (lower is better); NaN when nothing was labelled correctly at beta 0."""
        return auc_of_curve(self.accuracy, self.betas)

    @property
    def neutral_auc(self) -> float:
        return neutral_auc_of_curve(self.kl_sums.tolist(), self.betas)

    @property
    def class_probabilities(self) -> torch.Tensor:
        """Mean softmax vector per true class and beta: (c, len(betas), c); NaN for absent classes."""
        return self.probability_sums / self.class_counts.view(-1, 1, 1)
