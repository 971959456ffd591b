"""The decompositions the evaluation compares, behind one call: [0, 1] images in, an ``Explanation`` out.

DXAI's parts come from the exported bundle (``dxai.inference.Explainer``), the heatmap baselines'
from ``dxai.explain.baselines``. Every method explains the classifier's predicted class, as
DXAI's inference does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dxai.explain.baselines import make_baseline
from dxai.explanation import Explanation
from dxai.inference import Explainer
from dxai.normalization import Normalization

Method = Callable[[torch.Tensor], Explanation]
PATH_METHODS = ("integrated_gradients", "internal_influence")
SEEDED_METHODS = ("random", "gradient_shap")


def baseline_method(name: str, classifier: nn.Module, normalization: Normalization, path_steps: int,
                    batch_size: int, seed: int) -> Method:
    """A captum heatmap baseline. Give it at most ``batch_size`` images per call: captum's LRP
    deletes its layer rules after each attribution, so a call split into chunks fails."""
    options: dict = {"batch_size": batch_size, "normalization": normalization}
    if name in PATH_METHODS:
        options["n_steps"] = path_steps
    if name in SEEDED_METHODS:
        options["seed"] = seed
    return make_baseline(name, classifier, **options).explain


def build_methods(explainer: Explainer | None, classifier: nn.Module, normalization: Normalization,
                  baselines: list[str], path_steps: int, batch_size: int, seed: int) -> dict[str, Method]:
    """``dxai`` (when a bundle is given) and the named baselines for ``classifier``, in that order."""
    methods = {"dxai": explainer.explain} if explainer is not None else {}
    for name in baselines:
        methods[name] = baseline_method(name, classifier, normalization, path_steps, batch_size, seed)
    return methods
