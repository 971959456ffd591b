"""Benchmark of decomposition training: iterations/s and images/s of the real LightningModule.

    python -m dxai.bench train --json        # synthetic (32 px) and AFHQ (256 px) settings

Each setting runs the stage's own ``DecompositionModule.training_step`` in a Trainer on random
data (an untrained classifier of the configured architecture; the cost is the same), times
``steps`` iterations after ``warmup`` iterations, and reports one iteration = one discriminator
and one generator update on a batch of ``decomposition.batch_size`` (or ``data.batch_size``) images;
on a CPU the AFHQ setting runs batches of 2, which fit in 24 GB (``--batch-size`` sets any).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
import warnings

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from dxai.config import Config, load_config
from dxai.models import build_configured_classifier
from dxai.training.decomposition import OPTIMIZER_STEPS_PER_ITERATION, DecompositionModule

SETTINGS = {"synthetic": {"warmup": 3, "steps": 20}, "afhq": {"warmup": 1, "steps": 2}}
CPU_BATCH_SIZE = {"afhq": 2}  # AFHQ's batch of 8 at 256 px needs more than 24 GB of memory on a CPU


class RandomImages(Dataset):
    def __init__(self, cfg: Config, size: int):
        self.cfg, self.size = cfg, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(index)
        shape = (self.cfg.data.img_channels, self.cfg.data.img_size, self.cfg.data.img_size)
        return {"image": torch.rand(shape, generator=g) * 2 - 1,
                "label": int(torch.randint(self.cfg.data.num_classes, (), generator=g))}


class IterationTimer(pl.Callback):
    """Wall time of the iterations after the first ``warmup`` ones."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.timed = warmup, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.warmup:
            self._sync(module)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx >= self.warmup:
            self.timed += 1
        self._sync(module)
        self.end = time.perf_counter()

    @staticmethod
    def _sync(module):
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)


def bench_setting(name: str, warmup: int, steps: int, batch_size: int | None = None,
                  precision: str | None = None, overrides: list[str] | None = None) -> dict:
    cfg = load_config(name, ([f"trainer.precision={precision}"] if precision else []) + list(overrides or []))
    batch_size = batch_size or cfg.decomposition.batch_size or cfg.data.batch_size
    module = DecompositionModule(cfg, build_configured_classifier(cfg))
    loader = DataLoader(RandomImages(cfg, batch_size * (warmup + steps)), batch_size=batch_size, drop_last=True)
    timer = IterationTimer(warmup)
    trainer = pl.Trainer(accelerator="auto", devices=1, precision=cfg.trainer.precision,
                         max_steps=OPTIMIZER_STEPS_PER_ITERATION * (warmup + steps), logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, callbacks=[timer])
    trainer.fit(module, train_dataloaders=loader)
    seconds = timer.end - timer.start
    result = {"img_size": cfg.data.img_size, "batch_size": batch_size, "branches": cfg.decomposition.num_branches,
              "iterations": timer.timed, "seconds": round(seconds, 3),
              "iterations_per_s": round(timer.timed / seconds, 4),
              "images_per_s": round(timer.timed * batch_size / seconds, 3),
              "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    if module.device.type == "cuda":
        result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated(module.device) / 2**30, 2)
    return result


def _cpu_batch_size(name: str) -> int | None:
    return None if torch.cuda.is_available() else CPU_BATCH_SIZE.get(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dxai.bench train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--batch-size", type=int, help="instead of each setting's own batch (default: the "
                                                       f"configuration's; on a CPU {CPU_BATCH_SIZE})")
    parser.add_argument("overrides", nargs="*", help="dotted settings of every setting, e.g. decomposition.r1_every=16")
    args = parser.parse_args(argv)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    results = {"bench": "train", "device": device}
    for name in args.settings:  # peak_rss_gb is the process's peak so far: the settings grow in this order
        result = bench_setting(name, **SETTINGS[name], batch_size=args.batch_size or _cpu_batch_size(name),
                               overrides=args.overrides)
        results[f"{name}_{result['img_size']}px"] = result
    if args.json:
        print(json.dumps(results))
    else:
        for key, r in results.items():
            if isinstance(r, dict):
                print(f"{key:14s} batch {r['batch_size']:3d}  {r['iterations_per_s']:8.3f} it/s  "
                      f"{r['images_per_s']:9.2f} images/s  peak RSS {r['peak_rss_gb']:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
