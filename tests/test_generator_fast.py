"""The generator's per-branch forward equals the grouped-convolution definition, forward and gradients."""

import pytest
import torch

from dxai.nets import generator as generator_module
from dxai.nets.generator import Generator


def _generator(skip: str) -> Generator:
    torch.manual_seed(0)
    generator = Generator(16, 3, num_branches=3, base_channels=4, max_channels=8, num_downsample=2,
                          num_bottleneck=1, style_dim=8, encoder_blocks=[2, 1], skip=skip)
    with torch.no_grad():  # random affine parameters, not the initial ones and zeros
        for param in generator.parameters():
            param.add_(0.3 * torch.randn_like(param))
    return generator


@pytest.mark.parametrize("skip", ["add", "concat"])
@pytest.mark.parametrize("per_block_style", [False, True])
def test_forward_and_gradients_equal_the_grouped_reference(skip, per_block_style, monkeypatch):
    generator = _generator(skip)
    x = torch.randn(2, 3, 16, 16)
    style = torch.randn(2, generator.num_style_blocks, 8) if per_block_style else torch.randn(2, 8)
    outputs, grads, weights = [], [], None
    monkeypatch.setattr(generator_module, "PER_BRANCH_TRAINING_MIN_SIZE", 0)  # the per-branch path with gradients
    for forward in (generator.reference_forward, generator.forward):
        generator.zero_grad()
        inputs = x.clone().requires_grad_(True)
        branches, features = forward(inputs, style, return_features=True)
        weights = weights or [torch.randn_like(t) for t in (branches, *features)]  # a random linear loss
        sum((t * w).sum() for t, w in zip((branches, *features), weights)).backward()
        outputs.append([branches, *features])
        grads.append([inputs.grad] + [p.grad.clone() for p in generator.parameters()])
    for reference, fast in zip(outputs[0], outputs[1], strict=True):  # to 1e-5 of the tensor's largest entry
        assert reference.shape == fast.shape
        assert (fast - reference).abs().max() <= 1e-5 * max(1.0, float(reference.abs().max()))
    # Gradients to 1e-5 of the largest one (a parameter whose true gradient is 0, a bias before an
    # instance norm, gets rounding noise of the size of the others).
    scale = max(float(g.abs().max()) for g in grads[0])
    for reference, fast in zip(grads[0], grads[1], strict=True):
        assert (fast - reference).abs().max() <= 1e-5 * scale
