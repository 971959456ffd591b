"""The decompositions the evaluation compares, behind one call: model-domain images in, parts out.

DXAI's parts come from the exported bundle (``dxai.inference.Explainer``, which takes [0, 1]
images), the heatmap baselines' from ``dxai.explain.baselines``. Every method explains the
classifier's predicted class, as DXAI's inference does.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from dxai.explain.baselines import make_baseline
from dxai.explanation import Explanation
from dxai.inference import Explainer

Method = Callable[[torch.Tensor], Explanation]
PATH_METHODS = ("integrated_gradients", "internal_influence")
SEEDED_METHODS = ("random", "gradient_shap")


def dxai_method(explainer: Explainer) -> Method:
    def explain(images: torch.Tensor) -> Explanation:
        images01 = explainer.normalization.denormalize(images).clamp(0, 1)
        return explainer(images01)
    return explain


def baseline_method(name: str, classifier: nn.Module, path_steps: int, batch_size: int, seed: int) -> Method:
    """A captum heatmap baseline. Give it at most ``batch_size`` images per call: captum's LRP
    deletes its layer rules after each attribution, so a call split into chunks fails."""
    options: dict = {"batch_size": batch_size}
    if name in PATH_METHODS:
        options["n_steps"] = path_steps
    if name in SEEDED_METHODS:
        options["seed"] = seed
    baseline = make_baseline(name, classifier, **options)
    return baseline.attribute


def build_methods(explainer: Explainer | None, classifier: nn.Module, baselines: list[str], path_steps: int,
                  batch_size: int, seed: int) -> dict[str, Method]:
    """``dxai`` (when a bundle is given) and the named baselines for ``classifier``, in that order."""
    methods = {"dxai": dxai_method(explainer)} if explainer is not None else {}
    for name in baselines:
        methods[name] = baseline_method(name, classifier, path_steps, batch_size, seed)
    return methods
