"""The mapping network (latent z -> style of a class) and the fixed per-class styles of inference."""

from __future__ import annotations

import torch
from torch import nn


def _mlp(dims: list[int], last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (dim_in, dim_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(dim_in, dim_out))
        if last_activation or i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MappingNetwork(nn.Module):
    """Shared MLP, then one head per class: z (B x latent_dim) and class (B) -> style.

    The style is B x style_dim, or with ``num_style_blocks > 1`` (``style_per_block``)
    B x num_style_blocks x style_dim, one style per AdaIN block of the generator.
    """

    def __init__(self, latent_dim: int = 16, style_dim: int = 64, num_classes: int = 2, hidden: int = 512,
                 shared_layers: int = 4, head_layers: int = 4, num_style_blocks: int = 1):
        super().__init__()
        self.latent_dim, self.style_dim, self.num_classes = latent_dim, style_dim, num_classes
        self.num_style_blocks = num_style_blocks
        self.shared = _mlp([latent_dim] + [hidden] * shared_layers, last_activation=True)
        self.heads = nn.ModuleList(
            _mlp([hidden] * head_layers + [style_dim * num_style_blocks], last_activation=False)
            for _ in range(num_classes))

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.shared(z)
        every_class = torch.stack([head(h) for head in self.heads], dim=1)
        style = every_class[torch.arange(len(labels), device=labels.device), labels]
        return style.view(-1, self.num_style_blocks, self.style_dim) if self.num_style_blocks > 1 else style


@torch.no_grad()
def class_styles(mapping: MappingNetwork, num_classes: int, num_z: int = 1000, seed: int = 0) -> torch.Tensor:
    """One style per class (num_classes x ...): the mapping's mean output over ``num_z`` latents.

    The latents come from a generator seeded with ``seed``, so the styles, and with them every
    decomposition made from them, are the same on every call.
    """
    device = next(mapping.parameters()).device
    z = torch.randn(num_z, mapping.latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    return torch.stack([mapping(z, torch.full((num_z,), k, device=device)).mean(0) for k in range(num_classes)])
