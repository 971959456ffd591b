"""Benchmark of inference: the Explainer's images/s against Integrated Gradients (50 steps).

    python -m dxai.bench infer --json                # 32 px (synthetic nets) and 256 px (AFHQ nets)

Each setting builds an Explainer from the configuration's networks with random weights (the
cost does not depend on the weights) around a ResNet18 classifier, explains one batch of
random images (parts + one-pass cartoon), and times captum's Integrated Gradients with 50
steps on the same classifier and batch, in the same run. ``parts`` gives each part of the
explainer's path (classifier, generator, mask predictor, cartoon visualisation) and IG-50 in
images/s, GFLOP per image (torch.utils.flop_counter; the generator: its grouped definition;
IG: 50 classifier forward + backward passes) and achieved GFLOP/s, each the median of
``--repeats`` timings after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

from dxai.config import load_config
from dxai.evaluation.speed import IG_STEPS, explainer_vs_integrated_gradients
from dxai.explain.baselines import make_baseline
from dxai.inference import Explainer
from dxai.layout import channels_last
from dxai.models import build_generator, cartoonx_settings, predictor_settings
from dxai.nets.classifier import build_classifier
from dxai.nets.mask_predictor import MaskPredictor
from dxai.normalization import Normalization
from dxai.timing import timed

SETTINGS = {"synthetic": 16, "afhq": 4}  # data set -> batch size


def random_explainer(dataset: str, device: str) -> Explainer:
    cfg = load_config(dataset)
    size, channels, classes = cfg.data.img_size, cfg.data.img_channels, cfg.data.num_classes
    classifier = build_classifier("resnet18", classes, channels, size).eval().requires_grad_(False)
    generator = build_generator(cfg).eval().requires_grad_(False)
    predictor = MaskPredictor(**predictor_settings(cfg)).eval().requires_grad_(False)
    styles = torch.randn(classes, cfg.decomposition.style_dim)
    return Explainer(classifier, generator, styles, predictor, Normalization.symmetric(channels),
                     [str(k) for k in range(classes)], size, cartoonx_settings(cfg), device)


def _gflops(action) -> float:
    """GFLOP of ``action``, run on one thread: the counter sees only the operations of its own thread
    (``split_over_cores`` falls back to one chunk there)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            action()
    finally:
        torch.set_num_threads(threads)
    return counter.get_total_flops() / 1e9


def _part(action, batch: int, gflops_per_image: float, repeats: int, device: torch.device) -> dict:
    action()  # warm-up
    seconds = statistics.median(timed(action, device)[1] for _ in range(repeats))
    return {"images_per_s": round(batch / seconds, 3), "gflop_per_image": round(gflops_per_image, 3),
            "gflop_per_s": round(gflops_per_image * batch / seconds, 2)}


def part_costs(explainer: Explainer, images: torch.Tensor, repeats: int = 3,
               ig_images_per_s: float | None = None) -> dict:
    """Images/s, GFLOP per image and achieved GFLOP/s of each part of ``explain`` and of IG-50
    (timed here unless ``ig_images_per_s`` is given, e.g. from ``explainer_vs_integrated_gradients``)."""
    images = images.to(explainer.device)
    batch, device = images.shape[0], explainer.device
    x = explainer.normalization.normalize(images)
    target = torch.zeros(batch, dtype=torch.long, device=device)
    representation = explainer.cartoonx.representation(tuple(images.shape[-2:])).to(device)
    with torch.no_grad():
        masks = explainer.predictor(images, target)
    parts = {"classifier": lambda: explainer.classifier(channels_last(x)),
             "generator": lambda: explainer.branches(x, target),
             "mask_predictor": lambda: explainer.predicted_masks(channels_last(images), target),
             "cartoon_visualisation": lambda: explainer.cartoonx.visualize(images, masks, representation)}
    # The generator's work is that of its definition (the grouped network): the fast forward's own
    # tricks (Gram diagonals for the norms, shortcuts before upsampling) neither add nor remove any.
    counted = {**parts, "generator": lambda: explainer.generator.reference_forward(x, explainer.styles[target])}
    results = {}
    with torch.no_grad():
        for name, action in parts.items():
            results[name] = _part(action, batch, _gflops(counted[name]) / batch, repeats, device)

    def classifier_pass() -> None:
        inputs = x[:1].detach().requires_grad_(True)
        explainer.classifier(inputs)[:, 0].sum().backward(inputs=[inputs])

    ig_gflops = IG_STEPS * _gflops(classifier_pass)
    if ig_images_per_s is None:
        ig = make_baseline("integrated_gradients", explainer.classifier, n_steps=IG_STEPS, batch_size=64,
                           normalization=explainer.normalization)
        results["integrated_gradients"] = _part(lambda: ig.attribute(images), batch, ig_gflops, repeats, device)
    else:
        results["integrated_gradients"] = {"images_per_s": round(ig_images_per_s, 3),
                                           "gflop_per_image": round(ig_gflops, 3),
                                           "gflop_per_s": round(ig_gflops * ig_images_per_s, 2)}
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dxai.bench infer", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed pairs (explainer, IG-50) and part timings")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    results = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
               "threads": torch.get_num_threads(), "classifier": "resnet18"}
    for dataset in args.settings:
        batch_size = SETTINGS[dataset]
        explainer = random_explainer(dataset, args.device)
        images = torch.rand(batch_size, explainer.channels, explainer.img_size, explainer.img_size,
                            generator=torch.Generator().manual_seed(0))
        result = explainer_vs_integrated_gradients(explainer, images, args.repeats)
        result["parts"] = parts = part_costs(explainer, images, args.repeats,
                                             result["integrated_gradients_images_per_s"])
        result["generator_gflop_per_s_over_classifier"] = round(
            parts["generator"]["gflop_per_s"] / parts["classifier"]["gflop_per_s"], 3)
        results[f"{dataset}_{explainer.img_size}px"] = result
    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")
