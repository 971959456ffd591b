"""The maths of DXAI training and its metrics, pinned on hand-made tensors."""

import math

import pytest
import torch
from torch import nn

from dxai.measures.decomposition import (
    auc_of_curve,
    beta_correct,
    class_part_corr,
    has_class_part,
    pearson_per_image,
    psnr,
    top_probability,
)
from dxai.training import losses
from dxai.training.common import ema_beta, update_ema
from dxai.training.decomposition import alpha_blend, alternative_labels


def hand_branches(batch=2, n=4):
    """Branch k of pass p is the constant 10 * p + k + 1, so every term of a sum is traceable."""
    base = torch.arange(1, n + 1, dtype=torch.float).view(1, n, 1, 1, 1).expand(batch, n, 3, 2, 2)
    return base.clone(), base + 10


def test_alpha_one_keeps_each_pass_and_zeroes_the_alternative_distinction():
    branches_y, branches_alt = hand_branches()
    x_hat_y, x_hat_alt = alpha_blend(branches_y, branches_alt, torch.ones(2, 3))
    assert torch.allclose(x_hat_y, branches_y.sum(1))            # 1 + 2 + 3 + 4
    assert torch.allclose(x_hat_alt, branches_alt[:, 1:].sum(1))  # 12 + 13 + 14, no psi_1^y~ = 11


def test_alpha_zero_swaps_the_agnostic_branches():
    branches_y, branches_alt = hand_branches()
    x_hat_y, x_hat_alt = alpha_blend(branches_y, branches_alt, torch.zeros(2, 3))
    assert torch.allclose(x_hat_y, branches_y[:, 0] + branches_alt[:, 1:].sum(1))  # 1 + 12 + 13 + 14
    assert torch.allclose(x_hat_alt, branches_y[:, 1:].sum(1))                     # 2 + 3 + 4


def test_alpha_blends_per_sample_and_per_branch():
    branches_y, branches_alt = hand_branches()
    alpha = torch.tensor([[0.5, 0.0, 1.0], [0.25, 0.25, 0.25]])
    x_hat_y, x_hat_alt = alpha_blend(branches_y, branches_alt, alpha)
    assert torch.allclose(x_hat_y[0], torch.full((3, 2, 2), 1 + (0.5 * 2 + 0.5 * 12) + 13 + 4))
    assert torch.allclose(x_hat_alt[1], torch.full((3, 2, 2), 0.25 * (12 + 13 + 14) + 0.75 * (2 + 3 + 4)))


def test_alternative_class_differs_and_covers_the_others():
    torch.manual_seed(0)
    labels = torch.randint(4, (4000,))
    alternative = alternative_labels(labels, 4)
    assert torch.all(alternative != labels) and alternative.min() >= 0 and alternative.max() <= 3
    share = torch.bincount(alternative[labels == 0], minlength=4).float() / (labels == 0).sum()
    assert share[0] == 0 and torch.allclose(share[1:], torch.full((3,), 1 / 3), atol=0.05)


def test_ema_moves_toward_the_model_with_a_warmed_up_beta():
    assert ema_beta(0.999, 0) == pytest.approx(0.1)
    assert ema_beta(0.999, 1000) == pytest.approx(1001 / 1010)
    assert ema_beta(0.999, 100000) == 0.999
    ema, model = nn.Linear(2, 2), nn.Linear(2, 2)
    nn.init.zeros_(ema.weight)
    nn.init.ones_(model.weight)
    update_ema(ema, model, 0.75)
    assert torch.allclose(ema.weight, torch.full((2, 2), 0.25))


def test_adversarial_loss_is_non_saturating_bce():
    zero = torch.zeros(5)
    assert losses.adversarial_loss(zero, real=True).item() == pytest.approx(math.log(2))
    assert losses.adversarial_loss(torch.full((3,), 20.0), real=True).item() < 1e-6
    assert losses.adversarial_loss(torch.full((3,), 20.0), real=False).item() == pytest.approx(20.0, rel=1e-4)
    logits = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert torch.equal(losses.select_head(logits, torch.tensor([2, 0])), torch.tensor([3.0, 4.0]))


def test_r1_penalty_of_a_linear_critic_is_half_its_squared_weight_norm():
    weight = torch.tensor([1.0, -2.0, 2.0])
    x = torch.randn(4, 3, requires_grad=True)
    assert losses.r1_penalty(x @ weight, x).item() == pytest.approx(0.5 * 9.0)


def test_kld_is_zero_for_agreement_and_matches_the_definition():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    assert losses.kld_loss(logits, logits).item() == pytest.approx(0.0, abs=1e-7)
    p_c = torch.tensor([0.5, 0.5])
    p_d = torch.tensor([0.9, 0.1])
    expected = float((p_c * (p_c / p_d).log()).sum())
    assert losses.kld_loss(p_d.log()[None], p_c.log()[None]).item() == pytest.approx(expected, rel=1e-5)


def test_class_fake_loss_sums_both_cross_entropies():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    loss = losses.class_fake_loss(logits[:1], torch.tensor([0]), logits[1:], torch.tensor([1]))
    assert loss.item() == pytest.approx(-math.log(0.5) - math.log(0.8), rel=1e-5)


def test_distance_and_reconstruction():
    x = torch.zeros(2, 3, 4, 4)
    assert losses.distance(x, x + 0.5).item() == pytest.approx(0.5 + 0.25)
    assert losses.reconstruction_loss(x, x + 0.5, x - 2).item() == pytest.approx(0.75 + 2 + 4)


def test_dis_rec_counts_only_pixels_where_psi_distinct_is_large():
    psi = torch.zeros(1, 3, 4, 4)
    psi[..., 1, 2] = 1.0
    mask = losses.distinct_mask(psi)
    assert mask.shape == (1, 1, 4, 4) and mask.sum() == 1 and mask[0, 0, 1, 2] == 1
    x = torch.zeros(1, 3, 4, 4)
    x_hat = torch.full((1, 3, 4, 4), 3.0)
    x_hat[..., 1, 2] = 1.0
    # Only the masked pixel counts (error 1 on 3 of 48 values), averaged over all values.
    assert losses.dis_rec_loss(x, x_hat, psi).item() == pytest.approx(3 / 48 + 3 / 48)


def features_of(vectors: list[torch.Tensor]) -> torch.Tensor:
    """One sample, branch k's feature map holding ``vectors[k]`` (1 channel x 2 x 2)."""
    return torch.cat([v.view(1, 1, 2, 2) for v in vectors], 1)


def test_orthogonality_loss_on_hand_made_features():
    a = torch.tensor([1.0, -1.0, 0.0, 0.0])
    b = torch.tensor([0.0, 0.0, 1.0, -1.0])
    assert losses.orthogonality_loss([features_of([a, b])], 2).item() == pytest.approx(0.0, abs=1e-6)
    # Correlation 1 (or -1) between each ordered pair of different branches counts 1.
    assert losses.orthogonality_loss([features_of([a, 2 * a + 1, -a])], 3).item() == pytest.approx(6.0)
    # Summed over layers.
    two_layers = [features_of([a, -a]), features_of([a, b])]
    assert losses.orthogonality_loss(two_layers, 2).item() == pytest.approx(2.0)


def test_psnr_and_pearson():
    a = torch.zeros(2, 3, 4, 4)
    assert torch.allclose(psnr(a, a + 0.1), torch.full((2,), 20.0))
    x = torch.randn(3, 3, 4, 4)
    assert torch.allclose(pearson_per_image(x, 2 * x + 1), torch.ones(3), atol=1e-6)
    assert torch.allclose(pearson_per_image(x, -x), -torch.ones(3), atol=1e-6)


def test_ground_truth_correlation_skips_images_without_a_class_part():
    part = torch.zeros(3, 3, 4, 4)
    part[0, :, :2] = 1.0
    part[2, :, 1:3, 1:3] = 0.5
    distinct = part.clone()
    distinct[2] *= -1
    assert torch.allclose(class_part_corr(distinct, part), torch.tensor([1.0, -1.0]), atol=1e-6)
    assert has_class_part(part).tolist() == [True, False, True]


def test_beta_auc_of_known_curves():
    assert auc_of_curve([0.8] * 11) == pytest.approx(1.0)
    assert auc_of_curve([1 - 0.1 * i for i in range(11)]) == pytest.approx(0.5)
    assert math.isnan(auc_of_curve([0.0] * 11))


class SignClassifier(nn.Module):
    """Class 1 when the image mean is positive, else class 0."""

    def forward(self, x):
        mean = x.flatten(1).mean(1)
        return torch.stack([-mean, mean], 1)


def test_beta_auc_drops_when_the_distinct_part_carries_the_class():
    x = torch.full((4, 1, 2, 2), 1.0)        # all class 1
    labels = torch.ones(4, dtype=torch.long)
    # x - beta * 2x has mean <= 0 from beta = 0.5 on, where the classifier says class 0.
    correct = beta_correct(SignClassifier(), x, 2 * x, labels)
    assert correct.tolist() == [4.0] * 5 + [0.0] * 6
    assert auc_of_curve(correct / 4) == pytest.approx(0.45)
    unchanged = beta_correct(SignClassifier(), x, torch.zeros_like(x), labels)
    assert auc_of_curve(unchanged / 4) == pytest.approx(1.0)
    probability = top_probability(SignClassifier(), torch.zeros(2, 1, 2, 2))
    assert torch.allclose(probability, torch.full((2,), 0.5))


def test_adversarial_loss_weights_each_samples_share():
    """The swap objective's lambda_swap: weight 1 is the plain mean; weight 0 drops a sample's term."""
    logits = torch.tensor([0.5, -1.0, 2.0])
    plain = losses.adversarial_loss(logits, real=True)
    assert torch.equal(losses.adversarial_loss(logits, real=True, weight=torch.ones(3)), plain)
    dropped = losses.adversarial_loss(logits, real=True, weight=torch.tensor([1.0, 1.0, 0.0]))
    assert torch.allclose(dropped, losses.adversarial_loss(logits[:2], real=True) * 2 / 3)
