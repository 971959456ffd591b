"""FLOPs and parameter counts of every network a configuration builds (torch.utils.flop_counter).

    python -m dxai.bench flops [--json] [--datasets synthetic afhq]

One forward pass of batch 1 per network at the configuration's image size; a GFLOP is 1e9
floating-point operations as torch counts them (a multiply-add is 2).
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dxai.config import load_config
from dxai.models import (
    build_configured_classifier,
    build_discriminator,
    build_generator,
    build_mapping,
    build_mask_predictor,
)


def _count(network: nn.Module, *inputs: torch.Tensor) -> dict:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        network.eval()(*inputs)
    return {"gflops": round(counter.get_total_flops() / 1e9, 3),
            "params": sum(p.numel() for p in network.parameters())}


def network_costs(dataset: str) -> dict:
    cfg = load_config(dataset)
    size, channels = cfg.data.img_size, cfg.data.img_channels
    image, label = torch.zeros(1, channels, size, size), torch.zeros(1, dtype=torch.long)
    generator = build_generator(cfg)
    mapping = build_mapping(cfg, generator)
    style = mapping(torch.zeros(1, cfg.decomposition.latent_dim), label).detach()
    return {"img_size": size,
            "generator": _count(generator, image, style),
            "mapping": _count(mapping, torch.zeros(1, cfg.decomposition.latent_dim), label),
            "discriminator": _count(build_discriminator(cfg), image),
            "mask_predictor": _count(build_mask_predictor(cfg), image, label),
            "classifier": _count(build_configured_classifier(cfg), image)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dxai.bench flops", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--datasets", nargs="+", default=["synthetic", "afhq"])
    args = parser.parse_args(argv)
    results = {dataset: network_costs(dataset) for dataset in args.datasets}
    if args.json:
        print(json.dumps(results))
        return
    for dataset, networks in results.items():
        print(f"{dataset} ({networks['img_size']} px)")
        for name, cost in networks.items():
            if name != "img_size":
                print(f"  {name:15s} {cost['gflops']:9.3f} GFLOP  {cost['params'] / 1e6:8.3f} M params")
