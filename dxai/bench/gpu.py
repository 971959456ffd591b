"""The GPU check: every speed that matters on a CUDA machine, in fp32 and bf16, as one JSON line.

    python -m dxai.bench gpu --json        (make gpu-check)

For each precision (``fp32``; ``bf16``: autocast to bfloat16, bf16-mixed training):

- ``decomposition_afhq_256px``: decomposition training at 256 px, batch 8: iterations/s, images/s
  and peak GPU memory (``dxai.bench.train``);
- ``masks_afhq_256px``: mask-predictor training steps/s at 256 px (its configured batch and L);
- ``infer_afhq_256px``: the Explainer (parts + one-pass cartoon) against captum Integrated
  Gradients-50 on the same batch, with each part's images/s and GFLOP/s (``dxai.bench.infer``);
- ``cartoonx_256px``: one CartoonX step over its bound, the classifier's forward + backward on the
  L obfuscations (``dxai.bench.cartoonx``).

Without a CUDA device it says so in one sentence and exits with status 1; ``--device cpu``
runs the same code path on the CPU at small settings (a check of the code, not a measurement).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings

import torch

from dxai.bench.cartoonx import measure_size
from dxai.bench.infer import part_costs, random_explainer
from dxai.bench.train import bench_setting
from dxai.config import load_config
from dxai.evaluation.speed import explainer_vs_integrated_gradients
from dxai.models import build_configured_classifier
from dxai.training.masks import MaskModule


def masks_steps_per_s(device: str, steps: int, size: int = 256) -> dict:
    """Mask-predictor training steps/s on random 256 px images (the module's own RDE loss and Adam)."""
    cfg = load_config("afhq")
    batch = cfg.masks.batch_size or cfg.data.batch_size
    module = MaskModule(cfg, build_configured_classifier(cfg), torch.rand(1, 3, size, size)).to(device)
    optimizer = module.configure_optimizers()
    images = torch.rand(batch, 3, size, size, device=device)

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


PRECISIONS = {"fp32": (None, "32-true"), "bf16": (torch.bfloat16, "bf16-mixed")}  # autocast dtype, Lightning


def _autocast(device: str, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


def measure_precision(device: str, dtype: torch.dtype | None, precision: str, quick: bool) -> dict:
    """Every measurement of the check at one precision; ``quick``: tiny settings for a CPU run."""
    results: dict = {}
    if not quick:
        torch.cuda.reset_peak_memory_stats()
        results["decomposition_afhq_256px"] = bench_setting("afhq", warmup=2, steps=10, batch_size=8,
                                                            precision=precision)
    with _autocast(device, dtype):
        if not quick:
            results["masks_afhq_256px"] = masks_steps_per_s(device, steps=10)
        explainer = random_explainer("afhq", device)
        images = torch.rand(1 if quick else 8, 3, 256, 256, generator=torch.Generator().manual_seed(0))
        repeats = 1 if quick else 3
        infer = explainer_vs_integrated_gradients(explainer, images, repeats=repeats)
        infer["parts"] = part_costs(explainer, images, repeats, infer["integrated_gradients_images_per_s"])
        results["infer_afhq_256px"] = infer
        results["cartoonx_256px"] = measure_size(64 if quick else 256, 8 if quick else 64, repeats,
                                                 1 if quick else 8, device)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dxai.bench gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu checks the code path at tiny settings")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("The GPU check needs a CUDA device and this machine has none (torch.cuda.is_available() is "
              "False); run it on a GPU machine, or pass --device cpu to check the code path.", file=sys.stderr)
        return 1
    results: dict = {"bench": "gpu", "device": torch.cuda.get_device_name() if cuda else "cpu (code path only)"}
    for name in args.precisions:
        dtype, precision = PRECISIONS[name]
        results[name] = measure_precision(args.device, dtype, precision, quick=not cuda)
    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")
    return 0
