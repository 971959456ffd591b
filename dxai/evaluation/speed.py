"""Images/s of the Explainer against captum Integrated Gradients (50 steps) on the same classifier.

The yardstick is measured in the same process, on the same batch and classifier. Each method runs
once to warm up, then the two alternate ``repeats`` times; the speedup is the median of the paired
ratios, so that a machine whose speed drifts between minutes (other jobs, frequency scaling) moves both
timings of a pair alike. The images/s are those of the median times.
"""

from __future__ import annotations

import statistics

import torch

from dxai.explain.baselines import make_baseline
from dxai.inference import Explainer
from dxai.timing import timed

IG_STEPS = 50


def explainer_vs_integrated_gradients(explainer: Explainer, images: torch.Tensor, repeats: int = 3,
                                      ig_batch_size: int = 64) -> dict:
    """Per-image speed of the explainer (parts + one-pass cartoon) and of IG-50 on ``images`` in [0, 1]."""
    images = images.to(explainer.device)
    integrated_gradients = make_baseline("integrated_gradients", explainer.classifier, n_steps=IG_STEPS,
                                         batch_size=ig_batch_size, normalization=explainer.normalization)
    methods = (lambda: explainer.explain(images), lambda: integrated_gradients.attribute(images))
    for method in methods:
        method()  # warm-up
    pairs = [tuple(timed(method, explainer.device)[1] for method in methods) for _ in range(repeats)]
    explainer_s, ig_s = (statistics.median(pair[k] for pair in pairs) for k in range(2))
    batch = images.shape[0]
    return {"batch_size": batch, "img_size": images.shape[-1],
            "explainer_images_per_s": batch / explainer_s, "integrated_gradients_images_per_s": batch / ig_s,
            "speedup_vs_integrated_gradients": statistics.median(ig / ex for ex, ig in pairs)}
