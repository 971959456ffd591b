"""Transfer neutrality: independent classifiers' top probability, true-class probability and argmax."""

import pytest
import torch
from torch import nn

from dxai.measures.transfer import TransferNeutrality, transfer_scores, transfer_sums


class MeanColour(nn.Module):
    """Reads the class from which colour channel is brightest: a classifier with known answers."""

    def __init__(self, sharpness: float):
        super().__init__()
        self.sharpness = sharpness

    def forward(self, x):
        return self.sharpness * x.mean((2, 3))


def test_a_part_that_keeps_the_class_is_read_by_the_classifier_and_a_flat_one_is_neutral():
    labels = torch.tensor([0, 1, 2, 0])
    keeps = torch.zeros(4, 3, 8, 8)
    keeps[torch.arange(4), labels] = 1.0
    flat = torch.zeros(4, 3, 8, 8)
    classifiers = [MeanColour(5.0), MeanColour(50.0)]
    kept = transfer_scores(transfer_sums(classifiers, keeps, labels), 4)
    neutral = transfer_scores(transfer_sums(classifiers, flat, labels), 4)
    assert kept["argmax_true"] == 1.0 and kept["true_prob"] > 0.9 and kept["max_prob"] == kept["true_prob"]
    assert neutral["true_prob"] == pytest.approx(1 / 3) and neutral["max_prob"] == pytest.approx(1 / 3)
    assert kept["by_classifier"]["true_prob"][1] > kept["by_classifier"]["true_prob"][0]  # per classifier


def test_the_accumulator_averages_over_batches_and_is_empty_without_classifiers():
    labels = torch.tensor([0, 1])
    part = torch.zeros(2, 3, 4, 4)
    part[0, 0] = 1.0
    meter = TransferNeutrality([MeanColour(100.0)])
    meter.add(part, labels)
    meter.add(torch.zeros(2, 3, 4, 4), labels)
    result = meter.result()
    assert result["argmax_true"] == 0.5  # right: image 0 of each batch (a flat image's argmax is class 0)
    assert TransferNeutrality([]).result() == {}
