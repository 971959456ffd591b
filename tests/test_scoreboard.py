"""The ground-truth scoreboard on its reference rows, the neutrality curve, and the neutral objective's loss."""

from __future__ import annotations

import math

import pytest
import torch

from dxai.measures.beta_curves import BetaCurve, neutral_auc_of_curve
from dxai.measures.ground_truth import GroundTruthScores
from dxai.normalization import Normalization
from dxai.training.losses import uniform_kl

UNIT = Normalization.symmetric(1)


def layers():
    """Two images with a class part (a bright 2 x 2 square) and one clean image (no class part)."""
    background = torch.tensor([-0.5, -0.3, -0.5, -0.3]).view(1, 1, 2, 2).repeat(3, 1, 2, 2)  # 1 x 4 x 4 each
    class_part = torch.zeros(3, 1, 4, 4)
    class_part[:2, :, :2, :2] = 1.0
    return background + class_part, class_part, background


def scores_of(distinct):
    images, class_part, background = layers()
    scores = GroundTruthScores(UNIT)
    scores.add(images, distinct, images - distinct, class_part, background)
    return scores.result()


def test_reference_rows_score_what_they_must():
    images, class_part, _ = layers()
    truth = scores_of(class_part)
    assert truth["distinct_error"] == 0 and truth["distinct_corr"] == pytest.approx(1.0)
    assert truth["energy_inside"] == 1.0 and truth["null_energy"] == 0.0
    assert scores_of(torch.zeros_like(images))["distinct_error"] == 1.0
    # The image itself: ||x - c||^2 / ||c||^2 = ||background||^2 / ||c||^2 = (8 * 0.25 + 8 * 0.09) / 4 per image.
    itself = scores_of(images)
    assert itself["distinct_error"] == pytest.approx((8 * 0.25 + 8 * 0.09) / 4)
    # Energy inside the square: (4 * 0.25) / (8 * 0.25 + 8 * 0.09 + 4 * 0.25 + ...) computed from the pixels.
    inside = images[:2, :, :2, :2].pow(2).sum() / images[:2].pow(2).sum()
    assert itself["energy_inside"] == pytest.approx(float(inside))
    clean = images[2]
    assert itself["null_energy"] == pytest.approx(float(clean.pow(2).sum() / (clean - clean.mean()).pow(2).sum()))


class Scaled(torch.nn.Module):
    """Logits proportional to the image mean: confident on bright images, neutral on a zero image."""

    def forward(self, x):
        mean = x.flatten(1).mean(1)
        return torch.stack([4 * mean, -4 * mean, torch.zeros_like(mean)], 1)


def test_neutral_auc_is_low_when_removing_the_part_makes_the_classifier_neutral():
    images = torch.ones(4, 1, 2, 2)
    labels = torch.zeros(4, dtype=torch.long)
    neutral, overshoot = BetaCurve(3), BetaCurve(3)
    neutral.add(Scaled(), images, images, labels)        # x_1 = 0: uniform
    overshoot.add(Scaled(), images, 3 * images, labels)  # x_1 = -2x: confident in class 1
    assert neutral.neutral_auc < 0.45 and overshoot.neutral_auc > 0.8
    assert overshoot.auc < neutral.auc  # beta-AUC prefers the overshoot
    assert neutral_auc_of_curve([1.0] * 11) == pytest.approx(1.0)
    assert math.isnan(neutral_auc_of_curve([0.0] * 11))


def test_uniform_kl_is_zero_on_uniform_logits_and_grows_with_confidence():
    assert float(uniform_kl(torch.zeros(2, 3))) == pytest.approx(0.0, abs=1e-7)
    confident = float(uniform_kl(torch.tensor([[5.0, 0.0, 0.0]])))
    more = float(uniform_kl(torch.tensor([[10.0, 0.0, 0.0]])))
    assert 0 < confident < more
