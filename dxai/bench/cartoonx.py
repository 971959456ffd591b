"""How close one CartoonX step comes to its lower bound, and how many images/s that makes.

Every step of CartoonX runs the classifier forward and backward (to its input) on L noisy
obfuscations per image; nothing can be faster than that. At each image size this measures,
on a ResNet18 with random weights (3 classes) and random images in [0, 1]:

- ``step_s``: one optimisation step for one image (B = 1, L samples): noise, obfuscation,
  inverse DWT, classifier, distortion, backward, Adam, projection;
- ``bound_s``: the bare classifier's forward + backward to its input on those L obfuscations
  (already normalised: the normalisation counts as overhead of the step);
- ``step_over_bound``: the median over repeats of the ratio of a step to the bound run right
  after it, in wall time; ``cpu_step_over_bound`` the same in this process's CPU time, which
  other jobs on the machine disturb less;
- ``images_per_s_b{B}_extrapolated_2000_steps``: B / (2000 x the wall time of one step of a
  batch of B images), for B = 1 (from ``step_s``) and B = ``--batch`` (from one step).

A warm-up step and bound precede the timed ones. The 1-minute load average before and after
tells how busy the machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from dxai.explain.classifier_wrapper import NormalizedClassifier
from dxai.explain.rde import MaskOptimizer, RDEObjective, obfuscated_images
from dxai.nets.classifier import build_classifier
from dxai.normalization import Normalization
from dxai.wavelets import WaveletTransform, default_levels, ones_mask

PAPER_STEPS = 2000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dxai.bench cartoonx",
                                     description="time a CartoonX step against its lower bound")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--num-samples", type=int, default=64, help="L, noise samples per image and step")
    parser.add_argument("--repeats", type=int, default=5, help="timed (step, bound) pairs per size")
    parser.add_argument("--batch", type=int, default=8, help="the larger batch whose throughput is measured")
    return parser.parse_args(argv)


def _timed(action) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``action()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def _optimizer(classifier, images: torch.Tensor, representation, num_samples: int) -> MaskOptimizer:
    objective = RDEObjective(classifier, images, representation, lam=20.0, num_samples=num_samples)
    masks = ones_mask(representation.mask_shapes(images.shape[-1]), images.shape[0], images.device)
    return MaskOptimizer(objective, masks, lr=1e-3)


def measure_size(size: int, num_samples: int, repeats: int, batch: int, device: str = "cpu") -> dict:
    torch.manual_seed(0)
    model = build_classifier("resnet18", 3, 3, size).eval().to(device)
    normalization = Normalization.symmetric(3)
    classifier = NormalizedClassifier(model, normalization)
    representation = WaveletTransform(default_levels(size)).to(device)
    images = torch.rand(batch, 3, size, size, device=device)
    single = _optimizer(classifier, images[:1], representation, num_samples)

    objective = single.objective
    noise = objective.noise.sample(objective.band_shapes, num_samples, range(1), [None], objective.coefficients[0])
    with torch.no_grad():
        obfuscations = obfuscated_images(representation, objective.coefficients, single.masks, noise,
                                         objective.image_size)[0]
    model_inputs = normalization.normalize(obfuscations)

    def bound() -> None:
        inputs = model_inputs.detach().requires_grad_(True)
        model(inputs).softmax(-1)[:, 0].sum().backward(inputs=[inputs])

    single.step()
    bound()
    pairs = [(_timed(single.step), _timed(bound)) for _ in range(repeats)]
    batch_step, _ = _timed(_optimizer(classifier, images, representation, num_samples).step)
    step = statistics.median(s[0] for s, _ in pairs)
    return {
        "levels": representation.levels,
        "step_s": round(step, 3),
        "bound_s": round(statistics.median(b[0] for _, b in pairs), 3),
        "step_over_bound": round(statistics.median(s[0] / b[0] for s, b in pairs), 3),
        "cpu_step_over_bound": round(statistics.median(s[1] / b[1] for s, b in pairs), 3),
        f"step_s_b{batch}": round(batch_step, 3),
        "images_per_s_b1_extrapolated_2000_steps": round(1 / (PAPER_STEPS * step), 6),
        f"images_per_s_b{batch}_extrapolated_2000_steps": round(batch / (PAPER_STEPS * batch_step), 6),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    sizes = {str(size): measure_size(size, args.num_samples, args.repeats, args.batch) for size in args.sizes}
    result = {"benchmark": "cartoonx", "classifier": "resnet18", "device": "cpu",
              "threads": torch.get_num_threads(), "num_samples": args.num_samples, "repeats": args.repeats,
              "sizes": sizes, "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
              "wall_s": round(time.perf_counter() - start, 1)}
    if args.json:
        print(json.dumps(result))
    else:
        for size, row in sizes.items():
            print(f"{size} px: " + ", ".join(f"{key} {value}" for key, value in row.items()))
        print(f"{result['wall_s']} s on {result['threads']} threads, load average "
              f"{result['load_average_before_after'][0]} -> {result['load_average_before_after'][1]}")
    return result
