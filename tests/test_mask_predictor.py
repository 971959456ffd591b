import pytest
import torch

from dxai.errors import DXAIError
from dxai.explain.cartoonx import CartoonX
from dxai.explain.rde import RDEObjective
from dxai.nets.mask_predictor import MaskPredictor
from dxai.wavelets import WaveletTransform, flatten_mask, mask_shapes

pytestmark = pytest.mark.usefixtures("single_thread")


def randomise_heads(predictor: MaskPredictor, scale: float = 3.0) -> None:
    """Give the zero-initialised heads large random weights, so outputs cover (0, 1) widely."""
    torch.manual_seed(1)
    with torch.no_grad():
        for head in [predictor.low_head, *(head for level in predictor.high_heads for head in level)]:
            head.conv.weight.normal_(0, scale)


@pytest.mark.parametrize("coefficient_inputs", [False, True])
@pytest.mark.parametrize("img_size,levels", [(16, 1), (16, 2), (16, 4), (32, 3), (32, 5), (64, 2), (64, 4),
                                             (256, 5)])
def test_masks_have_the_cartoonx_shapes_and_lie_in_unit_range(img_size, levels, coefficient_inputs):
    predictor = MaskPredictor(img_size, 3, 4, levels, base_channels=4, max_channels=8,
                              coefficient_inputs=coefficient_inputs)
    randomise_heads(predictor)
    masks = predictor(torch.rand(2, 3, img_size, img_size), torch.tensor([0, 3]))
    assert [tuple(band.shape) for band in masks] == [(2, *shape) for shape in mask_shapes(img_size, levels)]
    flat = flatten_mask(masks).detach()
    assert 0 <= float(flat.min()) and float(flat.max()) <= 1
    assert float(flat.std()) > 0.1


@pytest.mark.parametrize("coefficient_inputs", [False, True])
def test_other_image_sizes_get_masks_of_their_own_size(coefficient_inputs):
    predictor = MaskPredictor(32, 1, 2, 3, base_channels=4, coefficient_inputs=coefficient_inputs)
    masks = predictor(torch.rand(1, 1, 64, 48), torch.tensor([1]))
    assert [tuple(band.shape[1:]) for band in masks] == mask_shapes((64, 48), 3)


def test_a_fresh_predictor_keeps_nearly_everything():
    predictor = MaskPredictor(32, 3, 3, 3, base_channels=8, initial_keep=0.95)
    flat = flatten_mask(predictor(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])))
    assert torch.allclose(flat, torch.full_like(flat, 0.95), atol=1e-5)


def test_coefficient_features_are_the_standardised_wavelet_coefficients_and_their_size():
    images = torch.rand(2, 3, 32, 32)
    features = MaskPredictor(32, 3, 3, 3, coefficient_inputs=True).coefficient_features(images)
    for band, feature in zip(WaveletTransform(3).decompose(images), features, strict=True):
        assert feature.shape == (2, 6, *band.shape[2:])
        flat = band.flatten(1)
        expected = (band - flat.mean(1).view(-1, *[1] * (band.dim() - 1))) / flat.std(1, correction=0).view(
            -1, *[1] * (band.dim() - 1))
        assert torch.allclose(feature[:, :3], expected, atol=1e-5)
        assert torch.equal(feature[:, 3:], feature[:, :3].abs())


def test_a_head_reading_the_coefficients_keeps_the_largest():
    """Weights on the coefficients' absolute values alone: the low-pass mask grows with each
    coefficient's distance from its band's mean, wherever the image puts the large ones."""
    predictor = MaskPredictor(32, 3, 3, 3, base_channels=4, coefficient_inputs=True)
    images = torch.rand(2, 3, 32, 32)
    head = predictor.low_head
    with torch.no_grad():
        head.conv.weight[:, -3:] = 0.3  # logits within (-2, 1): no entry is clamped
        head.conv.bias.fill_(-2.0)
    masks = predictor(images, torch.tensor([0, 2]))[0].flatten(1)
    size = predictor.coefficient_features(images)[0][:, 3:].sum(1).flatten(1)
    assert torch.equal(masks.argmax(1), size.argmax(1))
    assert float(torch.corrcoef(torch.stack([masks[0], size[0]]))[0, 1]) > 0.8


def test_each_class_has_its_own_mask():
    predictor = MaskPredictor(32, 3, 3, 3, base_channels=4)
    randomise_heads(predictor)
    images = torch.rand(1, 3, 32, 32).expand(3, -1, -1, -1)
    flat = flatten_mask(predictor(images, torch.tensor([0, 1, 2])))
    assert not torch.allclose(flat[0], flat[1]) and not torch.allclose(flat[1], flat[2])


def test_a_few_training_steps_lower_the_rde_objective_on_a_fixed_batch(shapes_batch, trained_classifier):
    torch.manual_seed(0)
    images = shapes_batch(8, seed=3)["image"]
    objective = RDEObjective(trained_classifier, images, WaveletTransform(3), num_samples=4)
    predictor = MaskPredictor(32, 3, 3, 3, base_channels=8)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=1e-2)

    def loss() -> torch.Tensor:
        return objective.loss(predictor(images, objective.target), torch.Generator().manual_seed(0)).loss.mean()

    before = float(loss().detach())
    for _ in range(5):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert float(loss().detach()) < before - 0.5


def test_cartoonx_started_from_the_predictor_starts_at_its_mask(shapes_batch, trained_classifier):
    images = shapes_batch(3, seed=4)["image"]
    classifier = trained_classifier
    predictor = MaskPredictor(32, 3, 3, 3, base_channels=4)
    randomise_heads(predictor, scale=0.5)
    cartoonx = CartoonX(classifier, levels=3, num_samples=4, mask_predictor=predictor)
    predicted = cartoonx.predicted_mask(images)

    unchanged = cartoonx.optimize(images, init="predictor", steps=0)
    assert all(torch.equal(a, b) for a, b in zip(unchanged.masks, predicted, strict=True))

    one_step = cartoonx.optimize(images, init="predictor", steps=1, seed=7)
    objective = RDEObjective(classifier, images, WaveletTransform(3), num_samples=4)
    generators = [torch.Generator().manual_seed(7 + index) for index in range(3)]
    expected = objective.loss(predicted, generators).loss
    assert torch.allclose(one_step.history.loss[0], expected, atol=1e-6)
    assert not all(torch.equal(a, b) for a, b in zip(one_step.masks, predicted, strict=True))


def test_init_predictor_without_a_predictor_is_a_clear_error(shapes_batch, trained_classifier):
    cartoonx = CartoonX(trained_classifier, levels=3)
    with pytest.raises(DXAIError, match="mask_predictor"):
        cartoonx.optimize(shapes_batch(1, seed=5)["image"], init="predictor", steps=1)


@pytest.mark.parametrize("coefficient_inputs", [False, True])
def test_a_head_equals_its_convolution_of_the_sampled_features(coefficient_inputs):
    """The head projects the features onto the target's row before sampling; that equals the definition:
    sample every feature, concatenate beyond and coefficients, 1x1 convolution, the target's map."""
    from torch.nn import functional as F

    from dxai.nets.mask_predictor import BEYOND_GAIN, STRETCH, BandHead, band_grids
    torch.manual_seed(0)
    head = BandHead(8, 3, 0.95, 6 if coefficient_inputs else 0)
    with torch.no_grad():
        head.conv.weight.normal_(0, 0.5)
        head.conv.bias.normal_(0, 0.5)
    grid, beyond = band_grids(16, 16, 2, "db3", "zero")[1]
    features, target = torch.randn(4, 8, 8, 8, requires_grad=True), torch.tensor([0, 2, 1, 2])
    coefficients = torch.randn(4, 6, *grid.shape[1:3]) if coefficient_inputs else None
    sampled = F.grid_sample(features, grid.expand(4, -1, -1, -1), mode="bilinear", padding_mode="border",
                            align_corners=False)
    inputs = [sampled, BEYOND_GAIN * beyond.expand(4, -1, -1, -1)] + ([coefficients] if coefficient_inputs else [])
    logits = head.conv(torch.cat(inputs, dim=1))[torch.arange(4), target].unsqueeze(1)
    expected = (torch.sigmoid(logits) * (1 + 2 * STRETCH) - STRETCH).clamp(0, 1)
    ours = head(features, target, grid, beyond, coefficients)
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)
    weights = torch.randn_like(ours)
    inside = (expected > 0) & (expected < 1)  # the definition's clamp has no straight-through gradient
    assert inside.any()
    torch.testing.assert_close(torch.autograd.grad((ours * weights * inside).sum(), features)[0],
                               torch.autograd.grad((expected * weights * inside).sum(), features)[0], atol=1e-5, rtol=0)
