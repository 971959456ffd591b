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


@pytest.mark.parametrize("skip", ["add", "concat"])
@pytest.mark.parametrize("path", ["reference_forward", "forward"])
def test_two_styles_per_image_share_one_encoder_pass(skip, path, monkeypatch):
    """x with 2B styles equals [x, x] with the same styles, outputs and gradients (training's y, y~ pass)."""
    generator = _generator(skip)
    monkeypatch.setattr(generator_module, "PER_BRANCH_TRAINING_MIN_SIZE", 0)
    x, style = torch.randn(2, 3, 16, 16), torch.randn(4, 8)
    results = []
    for images in (lambda inputs: torch.cat([inputs, inputs]), lambda inputs: inputs):
        generator.zero_grad()
        inputs = x.clone().requires_grad_(True)
        branches, features = getattr(generator, path)(images(inputs), style, return_features=True)
        assert branches.shape[0] == 4 and all(f.shape[0] == 4 for f in features)
        weights = [torch.randn(t.shape, generator=torch.Generator().manual_seed(1)) for t in (branches, *features)]
        sum((t * w).sum() for t, w in zip((branches, *features), weights)).backward()
        results.append(([branches, *features], [inputs.grad] + [p.grad.clone() for p in generator.parameters()]))
    (tiled_outputs, tiled_grads), (shared_outputs, shared_grads) = results
    for tiled, shared in zip(tiled_outputs, shared_outputs, strict=True):
        assert (shared - tiled).abs().max() <= 1e-5 * max(1.0, float(tiled.abs().max()))
    scale = max(float(g.abs().max()) for g in tiled_grads)  # as above: zero-gradient biases get rounding noise
    for tiled, shared in zip(tiled_grads, shared_grads, strict=True):
        assert (shared - tiled).abs().max() <= 1e-5 * scale


def test_styles_must_be_a_multiple_of_the_images():
    generator = _generator("add")
    with pytest.raises(generator_module.GeneratorError, match="k \\* B styles for B images"):
        generator(torch.randn(2, 3, 16, 16), torch.randn(3, 8))


@pytest.mark.parametrize("channels", [3, 7, 64])
@pytest.mark.parametrize("size", [6, 16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_norm_and_pool_of_one_branch_equal_torch(channels, size, channels_last):
    """The per-branch path's instance norm (wide rows in channels-last) and 2x2 pooling equal torch's."""
    from torch.nn import functional as F

    from dxai.nets.blocks import average_pool, scaled_norm
    torch.manual_seed(0)
    x = 3 * torch.randn(2, channels, size, size) + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    scale, shift = torch.randn(2, channels), torch.randn(2, channels)
    expected = F.instance_norm(x, eps=1e-5) * scale[..., None, None] + shift[..., None, None]
    assert torch.allclose(scaled_norm(x, scale, shift, 1e-5), expected, atol=1e-5)
    assert torch.allclose(average_pool(x), F.avg_pool2d(x, 2), atol=1e-6)
    assert average_pool(x).is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_upsampling_convolution_and_merge_equal_upsampling_first(channels_last):
    """The per-branch path's transposed convolution equals nearest 2x upsampling and the 3x3 convolution,
    and its merge adds each skip position to its 2 x 2 upsampled positions, in either memory format."""
    from torch import nn
    from torch.nn import functional as F

    from dxai.nets.blocks import INV_SQRT2, _merge_upsampled, upsampled_branch_conv
    torch.manual_seed(0)
    conv = nn.Conv2d(2 * 6, 2 * 3, 3, padding=1, groups=2)
    x, skip = torch.randn(2, 6, 5, 7), torch.randn(2, 3, 5, 7)
    if channels_last:
        x, skip = x.contiguous(memory_format=torch.channels_last), skip.contiguous(memory_format=torch.channels_last)
    upsampled = F.interpolate(x, scale_factor=2, mode="nearest")
    with torch.no_grad():
        residual = upsampled_branch_conv(conv, x, 1, 2)
        expected = F.conv2d(upsampled, conv.weight[3:], conv.bias[3:], padding=1)
        assert torch.allclose(residual, expected, atol=1e-5)
        merged = (F.interpolate(skip, scale_factor=2, mode="nearest") * INV_SQRT2 + residual).clone()
        assert torch.allclose(_merge_upsampled(skip, residual), merged, atol=1e-6)
