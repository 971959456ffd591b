"""dxai: explain image classifiers by decomposition (DXAI) and cartoon explanations (CartoonX).

    import dxai
    explainer = dxai.Explainer.from_bundle("runs/synthetic/default")
    explanation = explainer.explain(images)          # images: B x C x H x W in [0, 1]
    masks = dxai.CartoonX(classifier, normalization=dxai.Normalization.symmetric(3)).attribute(images)

Every explainer takes images in [0, 1]; ``attribute(images, target=None)`` returns a tensor (the
distinct part, mask or heatmap) and ``explain(images, target=None)`` an ``Explanation``. The
names below are imported on first use, so ``import dxai`` stays light.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from dxai import _quiet  # noqa: F401  (first: it silences dependencies' noise before they are imported)

try:
    __version__ = version("dxai")
except PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0.0.0+unknown"

_EXPORTS = {
    "Explainer": "dxai.inference",
    "Explanation": "dxai.explanation",
    "Normalization": "dxai.normalization",
    "CartoonX": "dxai.explain.cartoonx",
    "PixelRDE": "dxai.explain.pixel_rde",
    "RDEResult": "dxai.explain.rde",
    "make_baseline": "dxai.explain.baselines",
    "BASELINES": "dxai.explain.baselines",
    "RandomBaseline": "dxai.explain.baselines",
    "GradCamBaseline": "dxai.explain.baselines",
    "GuidedGradCamBaseline": "dxai.explain.baselines",
    "IntegratedGradientsBaseline": "dxai.explain.baselines",
    "GradientShapBaseline": "dxai.explain.baselines",
    "LRPBaseline": "dxai.explain.baselines",
    "InternalInfluenceBaseline": "dxai.explain.baselines",
    "DXAIError": "dxai.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dxai' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
