"""Images/s of the Explainer against captum Integrated Gradients (50 steps) on the same classifier.

The yardstick is measured in the same process, on the same batch and classifier, right after
the explainer, so the ratio holds up when other jobs share the machine. Each method runs once
to warm up, then ``repeats`` times; the median time counts.
"""

from __future__ import annotations

import statistics

import torch

from dxai.explain.baselines import make_baseline
from dxai.inference import Explainer
from dxai.timing import timed

IG_STEPS = 50


def _median_seconds(function, repeats: int, device: torch.device) -> float:
    function()  # warm-up
    return statistics.median(timed(function, device)[1] for _ in range(repeats))


def explainer_vs_integrated_gradients(explainer: Explainer, images: torch.Tensor, repeats: int = 3,
                                      ig_batch_size: int = 64) -> dict:
    """Per-image speed of the explainer (parts + one-pass cartoon) and of IG-50 on ``images`` in [0, 1]."""
    images = images.to(explainer.device)
    integrated_gradients = make_baseline("integrated_gradients", explainer.classifier, n_steps=IG_STEPS,
                                         batch_size=ig_batch_size, normalization=explainer.normalization)
    explainer_s = _median_seconds(lambda: explainer.explain(images), repeats, explainer.device)
    ig_s = _median_seconds(lambda: integrated_gradients.attribute(images), repeats, explainer.device)
    batch = images.shape[0]
    return {"batch_size": batch, "img_size": images.shape[-1],
            "explainer_images_per_s": batch / explainer_s, "integrated_gradients_images_per_s": batch / ig_s,
            "speedup_vs_integrated_gradients": ig_s / explainer_s}
