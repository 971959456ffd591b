"""The GPU check: every speed that matters on a CUDA machine, as one JSON line.

    python -m dxai.bench gpu --json        (make gpu-check)

- ``decomposition_afhq_256px``: decomposition training at 256 px, batch 8, bf16-mixed: iterations/s,
  images/s and peak GPU memory (``dxai.bench.train``);
- ``masks_afhq_256px``: mask-predictor training steps/s at 256 px (its configured batch and L);
- ``infer_afhq_256px``: the Explainer (parts + one-pass cartoon) against captum Integrated
  Gradients-50, images/s on the same batch (``dxai.bench.infer``);
- ``cartoonx_256px``: one CartoonX step over its bound, the classifier's forward + backward on the
  L obfuscations (``dxai.bench.cartoonx``).

On a machine without a GPU it runs what a CPU can (the Explainer against IG, one CartoonX step)
and lists the rest under ``skipped`` with the command that measures it on a CPU.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

from dxai.bench.cartoonx import measure_size
from dxai.bench.infer import random_explainer
from dxai.bench.train import bench_setting
from dxai.config import load_config
from dxai.evaluation.speed import explainer_vs_integrated_gradients
from dxai.models import build_configured_classifier
from dxai.training.masks import MaskModule


def masks_steps_per_s(device: str, steps: int) -> dict:
    """Mask-predictor training steps/s on random 256 px images (the module's own RDE loss and Adam)."""
    cfg = load_config("afhq")
    batch = cfg.masks.batch_size or cfg.data.batch_size
    module = MaskModule(cfg, build_configured_classifier(cfg), torch.rand(1, 3, 256, 256)).to(device)
    optimizer = module.configure_optimizers()
    images = torch.rand(batch, 3, 256, 256, device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        module.rde_terms(images, cfg.cartoonx.lam).loss.mean().backward()
        optimizer.step()

    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"batch_size": batch, "num_samples": cfg.masks.num_samples, "steps_per_s": round(steps / seconds, 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m dxai.bench gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    results: dict = {"bench": "gpu", "device": torch.cuda.get_device_name() if cuda else "cpu", "skipped": []}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        results["decomposition_afhq_256px"] = bench_setting("afhq", warmup=2, steps=10, batch_size=8,
                                                            precision="bf16-mixed")
        results["masks_afhq_256px"] = masks_steps_per_s(device, steps=10)
    else:
        results["skipped"] += [
            "decomposition_afhq_256px (needs a GPU; on a CPU: python -m dxai.bench train --batch-size 8)",
            "masks_afhq_256px (needs a GPU)"]
    explainer = random_explainer("afhq", device)
    images = torch.rand(8 if cuda else 4, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    results["infer_afhq_256px"] = explainer_vs_integrated_gradients(explainer, images, repeats=3)
    results["cartoonx_256px"] = measure_size(256, 64, 3, 8 if cuda else 2, device)
    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")
    return results
