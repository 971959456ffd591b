"""Classifiers as the explainers see them: images in [0, 1] in, logits out.

Explainers perturb images in [0, 1] (obfuscations are clamped there), while a trained model
expects its own input normalisation; ``NormalizedClassifier`` applies it inside the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from dxai.normalization import Normalization


class NormalizedClassifier(nn.Module):
    """``model(normalization.normalize(images))`` for images in [0, 1]; logits out."""

    def __init__(self, model: nn.Module, normalization: Normalization):
        super().__init__()
        self.model = model
        self.normalization = normalization

    @property
    def channels(self) -> int:
        return len(self.normalization.mean)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalization.normalize(images))


def as_unit_range_classifier(model: nn.Module, normalization: Normalization | None) -> nn.Module:
    """Wrap ``model`` so that it takes [0, 1] images; with no normalisation it already does."""
    return model if normalization is None else NormalizedClassifier(model, normalization)


def expected_channels(classifier: nn.Module) -> int | None:
    """The channel count the classifier takes, when it can be known without running it.

    A ``NormalizedClassifier`` knows it from its normalisation; otherwise the first
    convolution's input channels are used; ``None`` when the model has no convolution.
    """
    if isinstance(classifier, NormalizedClassifier):
        return classifier.channels
    first_conv = next((m for m in classifier.modules() if isinstance(m, nn.Conv2d)), None)
    return None if first_conv is None else first_conv.in_channels


@contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` in eval mode (fixed batch-norm statistics) and restore its mode after.

    In training mode batch norm would mix the obfuscations of different images, and an
    image's explanation would depend on the rest of the batch.
    """
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
