"""The random views the explained classifier judges in decomposition training (dxai/training/views.py)."""

import torch
from torch.nn import functional as F

from dxai.training.views import random_views


def test_views_off_are_the_images_themselves():
    images = torch.rand(3, 2, 5, 6)
    assert random_views(images) is images


def test_each_view_is_a_shifted_and_maybe_mirrored_crop_of_the_reflect_padded_image():
    torch.manual_seed(0)
    images = torch.rand(16, 2, 6, 7)
    views = random_views(images, shift=2, flip=True)
    assert views.shape == images.shape
    padded = F.pad(images, (2, 2, 2, 2), mode="reflect")
    offsets_seen, mirrored_seen = set(), set()
    for padded_image, view in zip(padded, views, strict=True):
        crops = {(dy, dx, mirror): crop.flip(-1) if mirror else crop
                 for dy in range(5) for dx in range(5) for mirror in (False, True)
                 for crop in [padded_image[:, dy:dy + 6, dx:dx + 7]]}
        matches = [key for key, crop in crops.items() if torch.equal(crop, view)]
        assert matches, "every view must be one crop of the padded image, mirrored or not"
        offsets_seen.add(matches[0][:2])
        mirrored_seen.add(matches[0][2])
    assert len(offsets_seen) > 1 and mirrored_seen == {False, True}  # drawn per image, not once per batch


def test_views_pass_gradients_and_add_noise_of_the_given_std():
    images = torch.zeros(64, 3, 16, 16, requires_grad=True)
    views = random_views(images, shift=1, flip=True, noise=0.1)
    assert abs(float(views.std()) - 0.1) < 0.005
    views.sum().backward()
    assert float(images.grad.sum()) == images.numel()  # every output reads one input pixel
