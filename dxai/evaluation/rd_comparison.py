"""Rate-distortion curves of the mask explanations (CartoonX paper, fig. 7a and 7b).

CartoonX and the mask predictor rank the wavelet coefficients, Pixel RDE the pixels, each
against a random ranking in its own representation. ``keep`` curves keep the most relevant
fraction and randomise the rest (a good ranking's distortion falls fastest); ``randomize``
curves randomise the most relevant fraction (a good ranking's distortion rises fastest).
CartoonX and Pixel RDE are optimised here with the settings given (fewer steps at a larger
learning rate than the paper's 2000 at 1e-3, to fit a CPU), which the result records.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

import numpy as np
import torch

from dxai.evaluation.rate_distortion import MODES, random_order, rate_distortion_curve, relevance_order
from dxai.explain.cartoonx import CartoonX
from dxai.explain.pixel_rde import PixelRDE
from dxai.inference import Explainer
from dxai.progress import Progress
from dxai.timing import timed
from dxai.wavelets import mask_size, unflatten_mask

WAVELET_METHODS = ("cartoonx", "predictor", "random_wavelet")
PIXEL_METHODS = ("pixel_rde", "random_pixel")


@dataclass(frozen=True)
class RDSettings:
    steps: int = 200             # CartoonX and Pixel RDE optimisation steps
    lr: float = 1e-2
    num_samples: int = 4         # L of the optimisation
    curve_samples: int = 16      # noise samples per image and point of a curve
    fractions: int = 21          # points per curve, evenly spaced in [0, 1]
    seed: int = 0


def _optimisers(explainer: Explainer, settings: RDSettings) -> tuple[CartoonX, PixelRDE]:
    """CartoonX with the bundle's wavelet, lambda and distortion, and Pixel RDE (lambda 4), both
    with the optimisation settings given."""
    bundle = explainer.cartoonx
    options = dict(normalization=explainer.normalization, lr=settings.lr, steps=settings.steps,
                   num_samples=settings.num_samples, distortion=bundle.distortion)
    return (CartoonX(explainer.classifier, levels=bundle.levels, wavelet=bundle.wavelet, mode=bundle.mode,
                     lam=bundle.lam, **options),
            PixelRDE(explainer.classifier, **options))


def _on_terminal() -> bool:
    """Progress bars only where someone watches (tqdm's ``disable=None`` rule)."""
    return sys.stderr.isatty()


def _orders(explainer: Explainer, cartoonx: CartoonX, pixel_rde: PixelRDE, images01: torch.Tensor,
            seed: int) -> tuple[dict, dict, dict]:
    """Coefficient orderings per method, the representation each lives in, and the seconds per
    image each explanation took."""
    size = tuple(images01.shape[-2:])
    wavelet = cartoonx.representation(size).to(images01.device)
    pixels = pixel_rde.representation(size)
    shapes = wavelet.mask_shapes(size)
    generator = torch.Generator().manual_seed(seed)
    progress = _on_terminal()
    device = images01.device
    cartoonx_result, cartoonx_seconds = timed(lambda: cartoonx.optimize(images01, seed=seed, progress=progress), device)
    pixel_result, pixel_seconds = timed(lambda: pixel_rde.optimize(images01, seed=seed, progress=progress), device)
    predicted, predictor_seconds = timed(lambda: explainer.explain(images01).mask, device)
    orders = {
        "cartoonx": relevance_order(cartoonx_result.masks, generator),
        "predictor": relevance_order(unflatten_mask(predicted, shapes), generator),
        "random_wavelet": random_order(len(images01), mask_size(shapes), generator),
        "pixel_rde": relevance_order(pixel_result.masks, generator),
        "random_pixel": random_order(len(images01), mask_size(pixels.mask_shapes(size)), generator),
    }
    representations = {**{name: wavelet for name in WAVELET_METHODS}, **{name: pixels for name in PIXEL_METHODS}}
    seconds = {"cartoonx": cartoonx_seconds, "pixel_rde": pixel_seconds, "predictor": predictor_seconds}
    return orders, representations, {name: value / len(images01) for name, value in seconds.items()}


def rd_comparison(explainer: Explainer, images01: torch.Tensor, settings: RDSettings) -> dict:
    """Curves (mean distortion over the images, squared l2 of the softmax outputs) per mode and
    method, their areas, the settings and the seconds per image of each explanation."""
    images01 = images01.to(explainer.device)
    cartoonx, pixel_rde = _optimisers(explainer, settings)
    orders, representations, seconds = _orders(explainer, cartoonx, pixel_rde, images01, settings.seed)
    fractions = torch.linspace(0, 1, settings.fractions)
    curves: dict = {}
    runs = [(mode, name, order) for mode in MODES for name, order in orders.items()]
    progress = Progress("evaluate: rate-distortion curves", len(runs), unit="curve")
    for mode, name, order in runs:
        progress.update(0, method=f"{name}, {mode}")
        curve = rate_distortion_curve(cartoonx.classifier, images01, representations[name],
                                      order.to(images01.device), fractions, mode=mode,
                                      num_samples=settings.curve_samples, distortion="l2", seed=settings.seed)
        curves.setdefault(mode, {})[name] = curve.mean_distortion.tolist()
        progress.update()
    progress.close()
    areas = {mode: {name: float(np.trapezoid(values, fractions.numpy())) for name, values in by_method.items()}
             for mode, by_method in curves.items()}
    return {"settings": {**asdict(settings), "images": len(images01), "cartoonx_lam": cartoonx.lam,
                         "pixel_rde_lam": pixel_rde.lam, "levels": representations["cartoonx"].levels,
                         "wavelet": cartoonx.wavelet,
                         "distortion_optimised": cartoonx.distortion, "distortion_measured": "l2"},
            "fractions": fractions.tolist(), "curves": curves, "area": areas, "seconds_per_image": seconds}
