import pytest
import torch
from torch import nn

from dxai.explain.cartoonx import CartoonX
from dxai.explain.pixel_rde import PixelRDE, PixelRepresentation
from dxai.explain.rde import AdaptiveNoise, RDEObjective, distortion_terms, l1_norm, obfuscate, obfuscated_images
from dxai.wavelets import WaveletTransform, mask_size, ones_mask

pytestmark = pytest.mark.usefixtures("single_thread")

REPRESENTATIONS = {"wavelet": lambda: WaveletTransform(3), "pixel": PixelRepresentation}


def tiny_classifier(channels: int = 3, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, classes)).eval()


def masks_like(representation, batch_size: int, value: float) -> list[torch.Tensor]:
    return [torch.full_like(band, value) for band in ones_mask(representation.mask_shapes(32), batch_size)]


def sample_noise(coefficients, num_samples: int, seed: int = 0):
    generators = [torch.Generator().manual_seed(seed + index) for index in range(coefficients[0].shape[0])]
    shapes = [tuple(band.shape[1:]) for band in coefficients]
    return AdaptiveNoise.of(coefficients).sample(shapes, num_samples, range(len(generators)), generators,
                                                 coefficients[0])


@pytest.mark.parametrize("name", REPRESENTATIONS)
def test_obfuscation_with_full_mask_is_the_image(name):
    representation = REPRESENTATIONS[name]()
    images = torch.rand(2, 3, 32, 32)
    coefficients = representation.decompose(images)
    noise = sample_noise(coefficients, 5)
    obfuscations = obfuscated_images(representation, coefficients, masks_like(representation, 2, 1.0), noise,
                                     (32, 32))
    assert obfuscations.shape == (2, 5, 3, 32, 32)
    torch.testing.assert_close(obfuscations, images.unsqueeze(1).expand_as(obfuscations), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", REPRESENTATIONS)
def test_obfuscation_with_empty_mask_ignores_the_image(name):
    representation = REPRESENTATIONS[name]()
    first, second = (representation.decompose(torch.rand(2, 3, 32, 32)) for _ in range(2))
    noise = sample_noise(first, 4)
    empty = masks_like(representation, 2, 0.0)
    for mixed_first, mixed_second, band_noise in zip(obfuscate(first, empty, noise), obfuscate(second, empty, noise),
                                                     noise):
        assert torch.equal(mixed_first, band_noise) and torch.equal(mixed_second, band_noise)
    assert torch.equal(obfuscated_images(representation, first, empty, noise, (32, 32)),
                       obfuscated_images(representation, second, empty, noise, (32, 32)))


def test_adaptive_noise_has_the_statistics_of_each_band():
    coefficients = WaveletTransform(3).decompose(torch.rand(2, 3, 32, 32))
    statistics = AdaptiveNoise.of(coefficients)
    noise = sample_noise(coefficients, 400)
    for band_index, (band, band_noise) in enumerate(zip(coefficients, noise)):
        for image in range(2):
            expected_mean = band[image].mean()
            expected_std = band[image].std(correction=0)
            assert statistics.mean[image][band_index] == pytest.approx(float(expected_mean), abs=1e-5)
            tolerance = 0.05 * float(expected_std) + 1e-3
            assert float(band_noise[image].mean()) == pytest.approx(float(expected_mean), abs=tolerance)
            assert float(band_noise[image].std()) == pytest.approx(float(expected_std), rel=0.05)
    assert all(torch.equal(a, b) for a, b in zip(noise, sample_noise(coefficients, 400)))


def test_distortion_measures():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]]])
    reference = logits[:, 0].softmax(-1)
    target = torch.tensor([0])
    uniform = torch.full((3,), 1 / 3)
    label = distortion_terms(logits, reference, target, "label")
    assert label[0, 0] == pytest.approx(0.0, abs=1e-7)
    assert label[0, 1] == pytest.approx(float((reference[0, 0] - 1 / 3) ** 2))
    squared_l2 = float(((reference[0] - uniform) ** 2).sum())
    assert distortion_terms(logits, reference, target, "l2")[0, 1] == pytest.approx(squared_l2)
    kl = float((reference[0] * (reference[0] / uniform).log()).sum())
    assert distortion_terms(logits, reference, target, "kl")[0, 1] == pytest.approx(kl, rel=1e-5)
    assert distortion_terms(logits, reference, target, "kl")[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert distortion_terms(logits, reference, target, "maximize_target")[0, 1] == pytest.approx((1 - 1 / 3) ** 2)
    with pytest.raises(ValueError, match="unknown distortion measure"):
        distortion_terms(logits, reference, target, "cross_entropy")


def test_l1_is_normalised_by_the_number_of_mask_entries():
    shapes = WaveletTransform(3).mask_shapes(32)
    assert torch.allclose(l1_norm(ones_mask(shapes, 2)), torch.ones(2))
    half = [band.clone() for band in ones_mask(shapes, 1)]
    half[0].zero_()
    assert float(l1_norm(half)) == pytest.approx(1 - shapes[0][1] * shapes[0][2] / mask_size(shapes))


def test_rde_loss_is_per_image_and_differentiable():
    classifier, representation = tiny_classifier(), WaveletTransform(3)
    images = torch.rand(3, 3, 32, 32)
    masks = [band.requires_grad_(True) for band in masks_like(representation, 3, 0.5)]
    generators = [torch.Generator().manual_seed(10 + index) for index in range(3)]
    losses = RDEObjective(classifier, images, representation, lam=2.0, num_samples=8).loss(masks, generators)
    assert losses.loss.shape == (3,)
    torch.testing.assert_close(losses.loss, losses.distortion + 2.0 * losses.l1)
    gradients = torch.autograd.grad(losses.loss[1], masks)
    assert all(float(g[[0, 2]].abs().max()) == 0 for g in gradients)
    assert all(float(g[1].abs().max()) > 0 for g in gradients)
    alone = RDEObjective(classifier, images[1:2], representation, lam=2.0, num_samples=8).loss(
        [band[1:2].detach() for band in masks], [torch.Generator().manual_seed(11)])
    torch.testing.assert_close(alone.loss, losses.loss[1:2].detach(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("samples_per_call", [8, 16, 40])
def test_chunked_gradients_equal_the_single_call(samples_per_call):
    classifier, representation = tiny_classifier(), WaveletTransform(3)
    objective = RDEObjective(classifier, torch.rand(5, 3, 32, 32), representation, lam=3.0, num_samples=8)

    def seeded():
        return [torch.Generator().manual_seed(index) for index in range(5)]

    whole = [band.requires_grad_(True) for band in masks_like(representation, 5, 0.7)]
    expected = objective.loss(whole, seeded())
    expected.loss.sum().backward()
    chunked = [band.detach().clone().requires_grad_(True) for band in whole]
    losses = objective.backward(chunked, seeded(), samples_per_call)
    torch.testing.assert_close(losses.loss, expected.loss.detach(), atol=1e-6, rtol=0)
    for mine, reference in zip(chunked, whole):
        torch.testing.assert_close(mine.grad, reference.grad, atol=1e-6, rtol=0)


def test_fewer_samples_per_call_than_samples_still_optimises():
    explainer = CartoonX(tiny_classifier(), num_samples=6, steps=3, lr=0.05, samples_per_call=4)
    result = explainer.optimize(torch.rand(2, 3, 32, 32))
    assert torch.isfinite(result.history.loss).all() and result.history.loss.shape == (3, 2)


def test_target_is_predicted_unless_given():
    classifier = tiny_classifier()
    images = torch.rand(4, 3, 32, 32)
    objective = RDEObjective(classifier, images, PixelRepresentation(), num_samples=2)
    assert torch.equal(objective.target, classifier(images).argmax(1))
    assert torch.equal(RDEObjective(classifier, images, PixelRepresentation(), 2, num_samples=2).target,
                       torch.full((4,), 2))


def test_loss_falls_on_a_trained_classifier(shapes_batch, trained_classifier):
    data = shapes_batch(4, seed=3)
    result = CartoonX(trained_classifier, num_samples=16, lr=0.05).optimize(data["image"], steps=40, seed=1)
    history = result.history
    assert history.loss.shape == (40, 4)
    assert float(history.mean_loss[-5:].mean()) < 0.5 * float(history.mean_loss[:5].mean())
    assert float(history.mean_distortion[-5:].mean()) < 0.05   # sparser, and the decision is kept


def test_a_batch_explains_each_image_as_if_alone(shapes_batch, trained_classifier):
    classifier = trained_classifier
    images = shapes_batch(4, seed=4)["image"]
    explainer = CartoonX(classifier, num_samples=8, lr=0.05, steps=6)
    batch = explainer.optimize(images, seed=7)
    for index in range(4):
        alone = explainer.optimize(images[index:index + 1], seed=7 + index)
        for batch_band, alone_band in zip(batch.masks, alone.masks):
            torch.testing.assert_close(batch_band[index:index + 1], alone_band, atol=1e-5, rtol=0)
        torch.testing.assert_close(batch.history.loss[:, index:index + 1], alone.history.loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("explainer_class", [CartoonX, PixelRDE])
def test_larger_lambda_gives_sparser_masks(explainer_class, shapes_batch, trained_classifier):
    # Adam moves every entry by about lr per step whatever lambda is; lambda decides where the
    # masks settle, so both runs go on until they have (lr * steps well above 1).
    images = shapes_batch(3, seed=5)["image"]
    l1 = {}
    for lam in (0.2, 20.0):
        result = explainer_class(trained_classifier, lam=lam, num_samples=8, lr=0.1).optimize(images, steps=30)
        l1[lam] = float(l1_norm(result.masks).sum())
    assert l1[20.0] < 0.5 * l1[0.2]


def test_step_zero_mask_is_the_given_initial_mask():
    explainer = CartoonX(tiny_classifier(), num_samples=4, lr=0.05)
    images = torch.rand(2, 3, 32, 32)
    shapes = WaveletTransform(3).mask_shapes(32)
    initial = [torch.rand(2, *shape) for shape in shapes]
    unchanged = explainer.optimize(images, init=initial, steps=0)
    assert all(torch.equal(a, b) for a, b in zip(unchanged.masks, initial))
    assert unchanged.history.loss.shape == (0, 2)
    stepped = explainer.optimize(images, init=torch.cat([band.flatten(1) for band in initial], 1), steps=2)
    torch.testing.assert_close(stepped.history.l1[0], l1_norm(initial))
    assert not torch.equal(stepped.masks[0], initial[0])


def test_bad_initial_masks_are_clear_errors():
    explainer = CartoonX(tiny_classifier(), num_samples=2)
    images = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="flat initial mask must be"):
        explainer.optimize(images, init=torch.ones(2, 5), steps=1)
    with pytest.raises(ValueError, match="must lie in"):
        explainer.optimize(images, init=[band * 2 for band in ones_mask(WaveletTransform(3).mask_shapes(32), 2)])
    with pytest.raises(ValueError, match="unknown initial mask"):
        explainer.optimize(images, init="zeros")
    with pytest.raises(ValueError, match="one seed per image"):
        explainer.optimize(images, seed=[1, 2, 3], steps=1)
