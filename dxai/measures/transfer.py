"""Transfer neutrality: is an agnostic part neutral for classifiers it was not made for?

A decomposition trained against classifier A can make A uniform on psi_agnostic with a change no
other classifier notices (an adversarial example, not an explanation). Classifiers trained
independently (another seed, other images; ``classifier.independent``) judge the same part: their
top probability (1/c is neutral), the probability of the true class and how often their argmax is
still the true class (1/c is chance). No ground truth is needed, so this works on every data set.

Inputs are in the classifier's domain ([-1, 1]). ``transfer_sums`` returns per-classifier sums
(K x 3: top probability, true-class probability, argmax right) that callers accumulate over
batches and DDP ranks; ``transfer_scores`` turns them into means.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

FIELDS = ("max_prob", "true_prob", "argmax_true")


@torch.no_grad()
def transfer_sums(classifiers: Sequence[nn.Module], part: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """K x 3 sums over the batch, one row per classifier: top probability, probability of ``labels``,
    number of images whose argmax is ``labels``."""
    rows = []
    for classifier in classifiers:
        probabilities = classifier(part).softmax(1).double()
        rows.append(torch.stack([probabilities.amax(1).sum(),
                                 probabilities.gather(1, labels.view(-1, 1)).sum(),
                                 (probabilities.argmax(1) == labels).sum().double()]))
    return torch.stack(rows) if rows else torch.zeros(0, len(FIELDS), dtype=torch.float64, device=part.device)


def transfer_scores(sums: torch.Tensor, count: float) -> dict:
    """Means over the classifiers and per classifier: ``max_prob``, ``true_prob``, ``argmax_true``
    (``{}`` without independent classifiers)."""
    if len(sums) == 0:
        return {}
    means = (sums / max(count, 1)).cpu()
    scores = {name: float(means[:, column].mean()) for column, name in enumerate(FIELDS)}
    scores["by_classifier"] = {name: [round(float(v), 4) for v in means[:, column]]
                               for column, name in enumerate(FIELDS)}
    return scores


class TransferNeutrality:
    """Accumulates ``transfer_sums`` of one kind of part over batches (no DDP: the evaluate stage's use)."""

    def __init__(self, classifiers: Sequence[nn.Module]):
        self.classifiers = list(classifiers)
        self.sums: torch.Tensor | None = None
        self.count = 0

    def add(self, part: torch.Tensor, labels: torch.Tensor) -> None:
        sums = transfer_sums(self.classifiers, part, labels).cpu()
        self.sums = sums if self.sums is None else self.sums + sums
        self.count += len(part)

    def result(self) -> dict:
        return {} if self.sums is None else transfer_scores(self.sums, self.count)
