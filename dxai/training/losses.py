"""The DXAI training losses (paper eqs. 6-13 and StarGAN-v2's adversarial loss with R1).

Images and parts are in the model domain ([-1, 1]); logits are B x num_classes. Every
function returns a scalar averaged over the batch.
"""

from __future__ import annotations

import math

import torch
from torch import autograd
from torch.nn import functional as F


def select_head(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The output of each sample's own class head: B x c -> B."""
    return logits.gather(1, labels[:, None]).squeeze(1)


def adversarial_loss(logits: torch.Tensor, real: bool, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Non-saturating GAN loss (eq. 11) on one head's logits: -log D for real, -log(1 - D) for fake;
    ``weight`` (one per sample) scales each sample's share of the mean."""
    target = torch.full_like(logits, 1.0 if real else 0.0)
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight)


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """0.5 E ||grad_x D(x)||^2 on real images (``real_images`` must require grad)."""
    (grad,) = autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean()


def kld_loss(disc_logits: torch.Tensor, classifier_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 12: KL(softmax(C(x)) || softmax(D(x))) on real images; trains D to classify like C."""
    return F.kl_div(F.log_softmax(disc_logits, 1), F.log_softmax(classifier_logits.detach(), 1),
                    log_target=True, reduction="batchmean")


def class_fake_loss(logits_y: torch.Tensor, labels: torch.Tensor, logits_alt: torch.Tensor,
                    alt_labels: torch.Tensor) -> torch.Tensor:
    """Eq. 6 for both blended images: CE(C(x_hat^y), y) + CE(C(x_hat^y~), y~)."""
    return F.cross_entropy(logits_y, labels) + F.cross_entropy(logits_alt, alt_labels)


def uniform_kl(logits: torch.Tensor) -> torch.Tensor:
    """KL(uniform || softmax(logits)), averaged over the batch: 0 exactly when the classifier is
    neutral (definition 1), log(c) + large when it is confident."""
    return (-F.log_softmax(logits, 1).mean(1) - math.log(logits.shape[1])).mean()


def distance(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Eq. 7: mean absolute plus mean squared difference."""
    diff = u - v
    return diff.abs().mean() + diff.pow(2).mean()


def reconstruction_loss(x: torch.Tensor, x_hat_y: torch.Tensor, x_hat_alt: torch.Tensor) -> torch.Tensor:
    """Eq. 8: d(x, x_hat^y) + d(x, x_hat^y~)."""
    return distance(x, x_hat_y) + distance(x, x_hat_alt)


def null_distinct_loss(psi_distinct: torch.Tensor, is_null: torch.Tensor) -> torch.Tensor:
    """Eq. 7's distance to zero of the distinct parts of the null class's images: an image without class
    evidence has nothing that makes it its class (0 for a batch without such images)."""
    null = psi_distinct[is_null]
    return distance(null, torch.zeros_like(null)) if len(null) else psi_distinct.new_zeros(())


def distinct_mask(psi_distinct: torch.Tensor) -> torch.Tensor:
    """Eq. 13's indicator, B x 1 x H x W: pixels whose |psi_1| (channel mean) exceeds the image's mean."""
    magnitude = psi_distinct.detach().abs().mean(1, keepdim=True)
    return (magnitude > magnitude.mean((2, 3), keepdim=True)).to(psi_distinct.dtype)


def dis_rec_loss(x: torch.Tensor, x_hat_y: torch.Tensor, psi_distinct: torch.Tensor) -> torch.Tensor:
    """Eq. 13: d(x * I, x_hat^y * I) with I = ``distinct_mask(psi_1^y)``."""
    mask = distinct_mask(psi_distinct)
    return distance(x * mask, x_hat_y * mask)


def orthogonality_loss(features: list[torch.Tensor], num_branches: int) -> torch.Tensor:
    """Eq. 9: sum over layers of the squared correlations between different branches' features.

    Each feature map is B x (n * C) x H x W with branch k in channels [k C, (k + 1) C). Per
    sample, every branch's features form one vector; the n x n correlation matrix R of these
    vectors enters as sum_{i != j} R_ij^2 = ||R - I||^2, averaged over the batch. R comes from
    the Gram matrix and the means (centring and normalising the n x n matrix, not the vectors):
    one pass over the features instead of several.
    """
    total = features[0].new_zeros(())
    for feature in features:
        vectors = feature.reshape(feature.shape[0], num_branches, -1).float()
        size = vectors.shape[2]
        mean = vectors.mean(2).double()
        gram = (vectors @ vectors.transpose(1, 2)).double()
        cov = gram - size * mean.unsqueeze(2) * mean.unsqueeze(1)
        norm = cov.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt().clamp_min(1e-8)
        corr = cov / (norm.unsqueeze(2) * norm.unsqueeze(1))
        off_diagonal = 1 - torch.eye(num_branches, device=corr.device, dtype=corr.dtype)
        total = total + (corr * off_diagonal).pow(2).sum((1, 2)).mean().to(total.dtype)
    return total
