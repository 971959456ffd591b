"""Heatmap baselines: decompositions that add up, errors, determinism, and one sanity check
on a classifier trained on synthetic shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import InputXGradient
from torch import nn

from dxai.data.synthetic import SyntheticDataset
from dxai.errors import DXAIError
from dxai.explain.baselines import BASELINES, default_layer, make_baseline
from dxai.nets.classifier import build_classifier
from dxai.normalization import Normalization

SIZE = 16
CLASSES = 3
FAST = {  # fewer steps and samples than the defaults, to keep the suite quick
    "integrated_gradients": {"n_steps": 4},
    "internal_influence": {"n_steps": 4},
    "gradient_shap": {"n_samples": 4, "n_baselines": 3},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two threads on two cores shared with other jobs run these small models many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_classifier(arch: str, img_size: int = SIZE, seed: int = 0) -> nn.Module:
    """A random-init classifier whose batch norms have non-trivial statistics and affine terms."""
    torch.manual_seed(seed)
    model = build_classifier(arch, CLASSES, 3, img_size)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model


def random_images(count: int = 3, img_size: int = SIZE) -> torch.Tensor:
    return torch.rand(count, 3, img_size, img_size, generator=torch.Generator().manual_seed(1))


def hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("arch", ["simple", "resnet18"])
def test_every_baseline_decomposes_and_leaves_the_classifier_alone(arch, name):
    classifier = random_classifier(arch)
    classifier.train()
    first = next(classifier.parameters())
    first.requires_grad_(False)
    state = {key: value.clone() for key, value in classifier.state_dict().items()}
    flags = [p.requires_grad for p in classifier.parameters()]
    inplace = [m.inplace for m in classifier.modules() if isinstance(m, nn.ReLU)]
    images = random_images().requires_grad_()

    explanation = make_baseline(name, classifier, **FAST.get(name, {})).explain(images)
    assert all(m.training for m in classifier.modules())

    heatmap = explanation.heatmap
    assert heatmap.shape == (3, 1, SIZE, SIZE)
    assert explanation.distinct.shape == explanation.agnostic.shape == images.shape
    assert torch.isfinite(heatmap).all() and (heatmap >= 0).all()
    peak = heatmap.flatten(1).amax(1)
    weight = heatmap / peak.clamp_min(1e-12).view(-1, 1, 1, 1)
    assert (weight <= 1 + 1e-6).all()
    assert torch.allclose(weight.flatten(1).amax(1)[peak > 0], torch.tensor(1.0))
    assert torch.allclose(explanation.distinct + explanation.agnostic, images, atol=1e-6)
    assert images.requires_grad and images.grad is None

    classifier.eval()
    with torch.no_grad():
        expected = classifier(images).softmax(1)
    assert torch.allclose(explanation.probabilities, expected, atol=1e-5)
    assert torch.equal(explanation.predicted, expected.argmax(1))
    assert torch.equal(explanation.target, explanation.predicted)

    assert all(torch.equal(state[key], value) for key, value in classifier.state_dict().items())
    assert [p.requires_grad for p in classifier.parameters()] == flags
    assert all(p.grad is None for p in classifier.parameters())
    assert hooks(classifier) == 0
    assert [m.inplace for m in classifier.modules() if isinstance(m, nn.ReLU)] == inplace


@pytest.mark.parametrize("arch", ["simple", "resnet18"])
def test_lrp_equals_input_times_gradient(arch):
    """With captum's default (epsilon ~ 0) rules LRP on a ReLU net is Input x Gradient; on the
    ResNet this holds only if the residual additions share relevance correctly."""
    classifier = random_classifier(arch).eval()
    images, target = random_images(), torch.tensor([0, 1, 2])
    lrp = make_baseline("lrp", classifier).explain(images, target).heatmap
    reference = build_classifier(arch, CLASSES, 3, SIZE)
    reference.load_state_dict(classifier.state_dict())
    for module in reference.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    gradient = InputXGradient(reference.eval()).attribute(images.clone().requires_grad_(), target=target)
    expected = gradient.abs().sum(1, keepdim=True)
    assert torch.allclose(lrp, expected, rtol=1e-3, atol=1e-4 * expected.max().item())


def test_explicit_targets_are_explained():
    classifier = random_classifier("simple")
    images = random_images()
    explainer = make_baseline("grad_cam", classifier)
    assert explainer.explain(images, target=2).target.tolist() == [2, 2, 2]
    per_image = explainer.explain(images, target=torch.tensor([0, 2, 1]))
    assert per_image.target.tolist() == [0, 2, 1]
    other = explainer.explain(images, target=[1, 2, 1])
    assert not torch.equal(per_image.heatmap, other.heatmap)


@pytest.mark.parametrize("target", [3, -1, [0, 1], torch.tensor([0.0, 1.0, 2.0])])
def test_bad_targets_are_clear_errors(target):
    with pytest.raises(DXAIError, match="target"):
        make_baseline("random", random_classifier("simple")).explain(random_images(), target)


def test_unknown_baseline_and_bad_input_are_clear_errors():
    classifier = random_classifier("simple")
    with pytest.raises(DXAIError, match="unknown baseline 'smoothgrad'.*grad_cam"):
        make_baseline("smoothgrad", classifier)
    with pytest.raises(DXAIError, match="B x C x H x W"):
        make_baseline("random", classifier).explain(random_images()[0])
    with pytest.raises(DXAIError, match="no layer named"):
        make_baseline("grad_cam", classifier, layer="features.9")
    with pytest.raises(DXAIError, match="not a module of the classifier"):
        make_baseline("grad_cam", classifier, layer=nn.Conv2d(3, 3, 1))
    unsupported = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                nn.Linear(4, CLASSES))
    with pytest.raises(DXAIError, match="no rule for .*'1' \\(GELU\\)"):
        make_baseline("lrp", unsupported).explain(random_images())


@pytest.mark.parametrize("name", ["random", "gradient_shap"])
def test_random_methods_are_seeded(name):
    classifier = random_classifier("simple")
    images = random_images()
    options = FAST.get(name, {})
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    first = make_baseline(name, classifier, seed=3, **options)
    same = make_baseline(name, classifier, seed=3, **options)
    other = make_baseline(name, classifier, seed=4, **options)
    maps = [first.explain(images).heatmap, first.explain(images).heatmap]
    assert torch.equal(maps[0], same.explain(images).heatmap)
    assert torch.equal(maps[1], same.explain(images).heatmap)
    assert not torch.equal(maps[0], maps[1])
    assert not torch.equal(maps[0], other.explain(images).heatmap)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)


@pytest.mark.parametrize(("name", "arch", "options"), [("integrated_gradients", "resnet18", {"n_steps": 4}),
                                                      ("lrp", "simple", {}), ("lrp", "resnet18", {})])
def test_chunking_does_not_change_the_result(name, arch, options):
    classifier = random_classifier(arch)
    images = random_images(5)
    whole = make_baseline(name, classifier, batch_size=8, **options).explain(images)
    chunks = make_baseline(name, classifier, batch_size=2, **options).explain(images)
    assert torch.allclose(whole.heatmap, chunks.heatmap, rtol=1e-4, atol=1e-7)


def test_default_layer_per_architecture_and_resolution():
    simple = random_classifier("simple")
    assert default_layer(simple) is simple.features[3]
    small = build_classifier("resnet18", CLASSES, 3, 32)
    assert default_layer(small) is small.layer4
    assert default_layer(small, random_images(1, 32)) is small.layer3  # layer4 is 2 x 2 there
    assert default_layer(small, random_images(1, 64)) is small.layer4
    assert all(m.training for m in small.modules())
    assert default_layer(nn.Sequential(nn.Identity(), small), random_images(1, 32)) is small.layer3
    custom = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.Flatten(), nn.LazyLinear(2))
    assert default_layer(custom) is custom[2]
    with pytest.raises(DXAIError, match="no nn.Conv2d"):
        default_layer(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)))


def test_layer_given_as_module_or_name():
    classifier = random_classifier("resnet18")
    images = random_images()
    by_module = make_baseline("grad_cam", classifier, layer=classifier.layer4).explain(images, 0)
    by_name = make_baseline("grad_cam", classifier, layer="layer4").explain(images, 0)
    default = make_baseline("grad_cam", classifier).explain(images, 0)  # layer2 at 16 px
    assert torch.equal(by_module.heatmap, by_name.heatmap)
    assert not torch.equal(by_module.heatmap, default.heatmap)


def shapes(seed: int, count: int):
    data = SyntheticDataset("shapes", CLASSES, size=count, img_size=32, seed=seed,
                            normalization=Normalization.symmetric(3))
    items = [data[index] for index in range(count)]
    return (torch.stack([item["image"] for item in items]), torch.tensor([item["label"] for item in items]),
            torch.stack([item["class_part"] for item in items]))


@pytest.fixture(scope="module")
def trained_simple_cnn() -> nn.Module:
    images, labels, _ = shapes(seed=0, count=512)
    torch.manual_seed(0)
    classifier = build_classifier("simple", CLASSES, 3, 32)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=3e-3)
    for _ in range(250):
        batch = torch.randint(len(images), (32,))
        loss = nn.functional.cross_entropy(classifier(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return classifier.eval()


def test_integrated_gradients_highlight_the_class_part(trained_simple_cnn):
    images, labels, class_part = shapes(seed=100, count=16)
    with torch.no_grad():
        accuracy = (trained_simple_cnn(images).argmax(1) == labels).float().mean()
    assert accuracy >= 0.8
    unit = Normalization.symmetric(3)
    explainer = make_baseline("integrated_gradients", trained_simple_cnn, normalization=unit)
    heatmap = explainer.attribute(unit.denormalize(images).clamp(0, 1), labels)
    inside = class_part.abs().sum(1, keepdim=True) > 0
    mass_inside = torch.stack([h[m].mean() for h, m in zip(heatmap, inside)])
    mass_outside = torch.stack([h[~m].mean() for h, m in zip(heatmap, inside)])
    assert mass_inside.mean() > 2 * mass_outside.mean()
    assert (mass_inside > mass_outside).float().mean() >= 0.8
