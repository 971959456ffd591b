"""Scores of a decomposition x = distinct + agnostic, for DXAI and heatmap baselines alike.

Inputs are in the classifier's domain (images in [-1, 1]; see ``dxai.explanation``), except
``psnr``, which takes [0, 1] images. Functions return per-image values or per-batch counts so
that callers can accumulate them over a data set (and over DDP ranks) before averaging.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

BETAS = tuple(round(0.1 * i, 1) for i in range(11))  # eq. 10: beta = 0, 0.1, ..., 1


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB (B) of two image batches with values in [0, data_range]."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(data_range**2 / mse)


@torch.no_grad()
def beta_correct(classifier: nn.Module, images: torch.Tensor, distinct: torch.Tensor, labels: torch.Tensor,
                 betas=BETAS) -> torch.Tensor:
    """Per beta, how many x_beta = x - beta * distinct the classifier still labels correctly."""
    return torch.stack([(classifier(images - beta * distinct).argmax(1) == labels).sum() for beta in betas]).float()


def auc_of_curve(accuracy, betas=BETAS) -> float:
    """Eq. 10's score: trapezoid(accuracy over beta) / accuracy(beta=0) / max(beta); lower is better."""
    accuracy = np.asarray(accuracy, dtype=np.float64)
    if accuracy[0] <= 0:
        return float("nan")
    return float(np.trapezoid(accuracy, np.asarray(betas)) / accuracy[0] / max(betas))


@torch.no_grad()
def top_probability(classifier: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Per-image highest class probability (B); on an agnostic part 1/c is perfectly neutral."""
    return classifier(images).softmax(1).amax(1)


def pearson_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image Pearson correlation (B) over all channels and pixels; 0 where one is constant."""
    a = a.float().flatten(1)
    b = b.float().flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denominator = (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    return (a * b).sum(1) / denominator


def has_class_part(class_part: torch.Tensor) -> torch.Tensor:
    """Per image (B, bool): whether its true class part is non-zero (e.g. not a clean image of
    the noise family), i.e. whether a part can be correlated with it."""
    return class_part.flatten(1).abs().amax(1) > 0


def class_part_corr(part: torch.Tensor, class_part: torch.Tensor) -> torch.Tensor:
    """Per-image correlation of a part (the distinct one, or the agnostic one to see how much of
    the class part leaked into it) with the true class part, for the images ``has_class_part``."""
    present = has_class_part(class_part)
    return pearson_per_image(part[present], class_part[present])
