"""The DXAI networks: shapes, branch independence, clear errors, deterministic class styles."""

import json

import pytest
import torch

from dxai.errors import DXAIError
from dxai.nets.discriminator import Discriminator
from dxai.nets.generator import Generator, decompose
from dxai.nets.mapping import MappingNetwork, class_styles

BRANCHES = 3


def tiny_generator(img_size=16, channels=3, **kwargs) -> Generator:
    settings = dict(num_branches=BRANCHES, base_channels=4, max_channels=8, num_downsample=2, num_bottleneck=1,
                    style_dim=8)
    return Generator(img_size, channels, **{**settings, **kwargs})


@pytest.mark.parametrize("channels", [1, 3])
def test_generator_shapes_and_features(channels):
    torch.manual_seed(0)
    generator = tiny_generator(channels=channels)
    x = torch.randn(2, channels, 16, 16)
    branches, features = generator(x, torch.randn(2, 8), return_features=True)
    assert branches.shape == (2, BRANCHES, channels, 16, 16)
    assert len(features) == generator.num_style_blocks == 3
    assert [f.shape[-1] for f in features] == [4, 8, 16]
    assert all(f.shape[1] % BRANCHES == 0 for f in features)
    per_block = generator(x, torch.randn(2, generator.num_style_blocks, 8))
    assert per_block.shape == branches.shape


def test_generator_rejects_sizes_it_cannot_take():
    with pytest.raises(DXAIError, match="num_downsample"):
        tiny_generator(img_size=20, num_downsample=3)
    with pytest.raises(DXAIError, match="num_branches"):
        tiny_generator(num_branches=1)
    generator = tiny_generator()
    with pytest.raises(DXAIError, match="16 x 16"):
        generator(torch.randn(1, 3, 32, 32), torch.randn(1, 8))
    with pytest.raises(DXAIError, match="style"):
        generator(torch.randn(1, 3, 16, 16), torch.randn(1, 5, 8))


@pytest.mark.parametrize("branch", [0, BRANCHES - 1])
def test_each_branch_depends_only_on_its_own_weights(branch):
    """Perturbing branch k's block of every parameter changes output k and no other."""
    torch.manual_seed(0)
    generator = tiny_generator()
    x, style = torch.randn(2, 3, 16, 16), torch.randn(2, 8)
    with torch.no_grad():
        before = generator(x, style)
        for name, param in generator.named_parameters():
            assert param.shape[0] % BRANCHES == 0, f"{name} is not made of per-branch blocks"
            size = param.shape[0] // BRANCHES
            param[branch * size:(branch + 1) * size] += 0.5 * torch.randn_like(param[:size])
        after = generator(x, style)
    changed = (after - before).abs().flatten(2).amax(2).amax(0)
    assert changed[branch] > 1e-3
    others = [k for k in range(BRANCHES) if k != branch]
    assert torch.all(changed[others] == 0)


def test_mapping_network_one_style_per_class_head():
    torch.manual_seed(0)
    mapping = MappingNetwork(latent_dim=16, style_dim=8, num_classes=3, hidden=16)
    z = torch.randn(4, 16)
    styles = mapping(z, torch.tensor([0, 1, 2, 0]))
    assert styles.shape == (4, 8)
    # A head only sees its own class: changing the label changes the style, the same label does not.
    assert torch.allclose(styles[0], mapping(z[:1], torch.tensor([0]))[0], atol=1e-6)
    assert not torch.allclose(styles[0], mapping(z[:1], torch.tensor([1]))[0])
    per_block = MappingNetwork(16, 8, 3, 16, num_style_blocks=5)
    assert per_block(z, torch.zeros(4, dtype=torch.long)).shape == (4, 5, 8)


def test_class_styles_are_deterministic_means_and_decompose_uses_them():
    torch.manual_seed(0)
    mapping = MappingNetwork(16, 8, 3, 16)
    styles = class_styles(mapping, 3, num_z=64, seed=0)
    assert styles.shape == (3, 8)
    assert torch.equal(styles, class_styles(mapping, 3, num_z=64, seed=0))
    z = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(styles[2], mapping(z, torch.full((64,), 2)).mean(0), atol=1e-6)
    generator = tiny_generator().eval()
    x, labels = torch.randn(2, 3, 16, 16), torch.tensor([2, 0])
    branches = decompose(generator, styles, x, labels)
    assert torch.equal(branches, decompose(generator, styles, x, labels))
    assert torch.allclose(branches[0], generator(x[:1], styles[2:3])[0], atol=1e-5)


@pytest.mark.parametrize("img_size", [16, 24, 32])
def test_discriminator_gives_one_logit_per_class(img_size):
    discriminator = Discriminator(img_size, 3, num_classes=4, base_channels=4, max_channels=8)
    assert discriminator(torch.randn(2, 3, img_size, img_size)).shape == (2, 4)


def test_official_generator_shape_concatenates_skips_per_branch():
    """The official code's layout: 4, 4, 4, 2 ResBlks per level and concatenated skips; branches stay apart."""
    generator = Generator(32, 3, num_branches=3, base_channels=2, max_channels=8, num_downsample=2,
                          num_bottleneck=1, style_dim=4, encoder_blocks=[3, 2], skip="concat")
    assert sum(block.downsample for block in generator.encoder) == 2 and len(generator.encoder) == 3 + 2 + 1
    upsampling = [block for block in generator.decoder if block.upsample]
    assert [block.conv1.in_channels for block in upsampling] == [3 * 2 * 8, 3 * 2 * 4]  # n x 2 x width
    x = torch.randn(2, 3, 32, 32)
    branches = generator(x, torch.randn(2, 4))
    assert branches.shape == (2, 3, 3, 32, 32)
    # The skip concatenation keeps branches apart: branch 0's output owes nothing to branch 1's encoder.
    branches[:, 0].sum().backward()
    first = generator.encoder[0].conv1.weight.grad  # rows branch-major: 2 channels per branch
    assert float(first[:2].abs().sum()) > 0 and float(first[2:].abs().sum()) == 0
    with pytest.raises(DXAIError, match="one count >= 1 per encoder level"):
        Generator(32, 3, num_downsample=2, encoder_blocks=[1, 2, 3])
    with pytest.raises(DXAIError, match="skip must be one of"):
        Generator(32, 3, num_downsample=2, skip="mul")


def test_flops_bench_sizes_the_afhq_generator_like_the_official_code(capsys):
    from dxai.bench.flops import main

    main(["--json", "--datasets", "afhq"])
    afhq = json.loads(capsys.readouterr().out)["afhq"]
    assert afhq["generator"]["gflops"] <= 16 and 3.5e6 < afhq["generator"]["params"] < 4.0e6
    assert set(afhq) == {"img_size", "generator", "mapping", "discriminator", "mask_predictor", "classifier"}
