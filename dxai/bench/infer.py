"""Benchmark of inference: the Explainer's images/s against Integrated Gradients (50 steps).

    python -m dxai.bench infer --json                # 32 px (synthetic nets) and 256 px (AFHQ nets)

Each setting builds an Explainer from the configuration's networks with random weights (the
cost does not depend on the weights) around a ResNet18 classifier, explains one batch of
random images (parts + one-pass cartoon), and times captum's Integrated Gradients with 50
steps on the same classifier and batch, in the same run.
"""

from __future__ import annotations

import argparse
import json
import warnings

import torch

from dxai.config import load_config
from dxai.evaluation.speed import explainer_vs_integrated_gradients
from dxai.inference import Explainer
from dxai.models import build_generator, cartoonx_settings, predictor_settings
from dxai.nets.classifier import build_classifier
from dxai.nets.mask_predictor import MaskPredictor
from dxai.normalization import Normalization

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dxai.bench infer", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    results = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
               "threads": torch.get_num_threads(), "classifier": "resnet18"}
    for dataset, batch_size in SETTINGS.items():
        explainer = random_explainer(dataset, args.device)
        images = torch.rand(batch_size, explainer.channels, explainer.img_size, explainer.img_size,
                            generator=torch.Generator().manual_seed(0))
        results[f"{dataset}_{explainer.img_size}px"] = explainer_vs_integrated_gradients(explainer, images,
                                                                                          args.repeats)
    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")
