import json

import pytest
import torch

from dxai.bench.__main__ import main as bench_main
from dxai.evaluation.rate_distortion import random_order, rate_distortion_curve, relevance_order
from dxai.explain.cartoonx import CartoonX
from dxai.explain.classifier_wrapper import NormalizedClassifier
from dxai.explain.pixel_rde import PixelRDE, PixelRepresentation
from dxai.nets.classifier import build_classifier
from dxai.normalization import Normalization
from dxai.wavelets import WaveletTransform, mask_size, ones_mask

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def explained(shapes_batch, trained_classifier):
    """Six correctly classified shapes, explained by CartoonX run to convergence (lr * steps = 3)."""
    data = shapes_batch(6, seed=2)
    classifier = trained_classifier
    assert torch.equal(classifier(data["image"]).argmax(1), data["label"])
    return data, CartoonX(classifier, num_samples=16, lr=0.1).optimize(data["image"], steps=30)


def mean_energy_inside_over_outside(explanations: torch.Tensor, class_part: torch.Tensor) -> float:
    """Mean squared value per pixel inside the true class part over the same outside it."""
    inside = class_part.abs().sum(1, keepdim=True) > 0
    energy = explanations ** 2
    return float((energy[inside].mean()) / energy[~inside].mean())


def test_cartoonx_concentrates_on_the_class_part(explained):
    data, result = explained
    assert result.explanations.shape == (6, 1, 32, 32)
    assert 0 <= float(result.explanations.min()) and float(result.explanations.max()) <= 1
    cartoon = mean_energy_inside_over_outside(result.explanations, data["class_part"])
    # The shapes are brighter than the background, so the image itself already leans inside;
    # the explanation must lean much further.
    image = mean_energy_inside_over_outside(data["image"].mean(1, keepdim=True), data["class_part"])
    assert cartoon > 2 * image > 2
    assert float(result.history.mean_distortion[-1]) < 0.05


def test_full_mask_visualises_the_greyscale_image(trained_classifier):
    images = torch.rand(2, 3, 32, 32)
    explainer = CartoonX(trained_classifier)
    transform = explainer.representation((32, 32))
    cartoon = explainer.visualize(images, ones_mask(transform.mask_shapes(32), 2), transform)
    torch.testing.assert_close(cartoon, images.mean(1, keepdim=True), atol=1e-5, rtol=0)


def test_pixel_rde_explanation_is_its_mask(trained_classifier):
    result = PixelRDE(trained_classifier, num_samples=4, lr=0.05).optimize(torch.rand(2, 3, 32, 32), steps=3)
    assert result.masks[0].shape == (2, 1, 32, 32)
    assert torch.equal(result.explanations, result.masks[0])
    assert result.flat_masks.shape == (2, 32 * 32)


def test_normalized_classifier_applies_the_models_normalisation():
    torch.manual_seed(0)
    model = build_classifier("simple", 3, 3, 32).eval()
    normalization = Normalization.symmetric(3)
    images = torch.rand(2, 3, 32, 32)
    wrapped = NormalizedClassifier(model, normalization)
    torch.testing.assert_close(wrapped(images), model(normalization.normalize(images)))
    explainer = CartoonX(model, normalization=normalization, num_samples=2)
    assert isinstance(explainer.classifier, NormalizedClassifier)


@pytest.mark.parametrize("images, keywords, message", [
    (torch.rand(2, 3, 32, 32) * 2 - 1, {}, r"takes images in \[0, 1\], but these range from -"),
    (torch.rand(2, 1, 32, 32), {}, "the classifier takes 3-channel images, but the images have 1 channels"),
    (torch.rand(3, 32, 32), {}, r"takes a batch B x C x H x W; for one image .* pass images\[None\]"),
    (torch.rand(2, 3, 32, 32), {"target": 3},
     r"target class 3 is out of range: the classifier has 3 classes \(0 to 2\)"),
    (torch.rand(2, 3, 32, 32), {"target": [0, 1, 2]}, "got 3 targets for 2 images"),
])
def test_bad_input_is_a_readable_error(images, keywords, message, trained_classifier):
    with pytest.raises(ValueError, match=message):
        CartoonX(trained_classifier, num_samples=2).optimize(images, steps=1, **keywords)


def test_too_many_levels_for_the_image_is_a_readable_error(trained_classifier):
    with pytest.raises(ValueError, match="a 32x32 image supports 1 to 5 wavelet levels, not J=6"):
        CartoonX(trained_classifier, levels=6, num_samples=2).optimize(torch.rand(1, 3, 32, 32), steps=1)
    with pytest.raises(ValueError, match="unknown distortion measure 'ce'"):
        CartoonX(trained_classifier, distortion="ce")


def test_rate_distortion_curves(explained, trained_classifier):
    data, result = explained
    classifier, images = trained_classifier, data["image"]
    transform = WaveletTransform(3)
    size = mask_size(transform.mask_shapes(32))
    cartoon_order = relevance_order(result.masks, torch.Generator().manual_seed(0))
    assert cartoon_order.shape == (6, size)
    assert torch.equal(cartoon_order.sort(1).values, torch.arange(size).expand(6, -1))
    assert bool((result.flat_masks.gather(1, cartoon_order).diff(dim=1) <= 0).all())

    fractions = [0.0, 0.01, 0.02, 0.05, 0.1, 1.0]
    keep = rate_distortion_curve(classifier, images, transform, cartoon_order, fractions, num_samples=16)
    baseline = rate_distortion_curve(classifier, images, transform,
                                     random_order(6, size, torch.Generator().manual_seed(0)), fractions,
                                     num_samples=16)
    assert keep.distortion.shape == (6, 6)
    assert float(keep.mean_distortion[-1]) == pytest.approx(0.0, abs=1e-8)       # all kept: the image itself
    torch.testing.assert_close(keep.distortion[0], baseline.distortion[0])       # nothing kept: same noise
    assert float(keep.mean_distortion[1:5].mean()) < 0.5 * float(baseline.mean_distortion[1:5].mean())

    randomized = rate_distortion_curve(classifier, images, transform, cartoon_order, fractions, mode="randomize",
                                       num_samples=16)
    assert float(randomized.mean_distortion[0]) == pytest.approx(0.0, abs=1e-8)
    torch.testing.assert_close(randomized.distortion[-1], keep.distortion[0])

    pixels = rate_distortion_curve(classifier, images, PixelRepresentation(), random_order(6, 32 * 32), [0.5],
                                   num_samples=4)
    assert pixels.distortion.shape == (1, 6)


def test_bench_dispatcher(capsys):
    assert bench_main(["nothing"]) == 2
    assert bench_main(["cartoonx", "--json", "--sizes", "16", "--num-samples", "2", "--repeats", "1",
                       "--batch", "2"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    row = line["sizes"]["16"]
    assert line["benchmark"] == "cartoonx" and row["step_over_bound"] > 0
    assert {"step_s", "bound_s", "images_per_s_b1_extrapolated_2000_steps",
            "images_per_s_b2_extrapolated_2000_steps"} <= row.keys()
