import pytest
import torch
from pytorch_wavelets import DWTForward, DWTInverse

from dxai.errors import DXAIError
from dxai.wavelets import (
    WaveletTransform,
    apply_mask,
    default_levels,
    flatten_mask,
    mask_shapes,
    mask_size,
    max_levels,
    ones_mask,
    unflatten_mask,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("size, levels", [(32, 1), (32, 3), (64, 4), (256, 5), ((40, 24), 2), (33, 3)])
def test_mask_shapes_match_the_coefficients(size, levels):
    height, width = (size, size) if isinstance(size, int) else size
    shapes = mask_shapes(size, levels)
    low, highs = DWTForward(J=levels, wave="db3", mode="zero")(torch.zeros(2, 3, height, width))
    assert len(shapes) == levels + 1
    assert shapes[0] == (1, *low.shape[2:])
    assert shapes[1:] == [(1, 3, *high.shape[3:]) for high in highs]
    assert mask_size(shapes) == sum(band.shape[1] * band.shape[2:].numel() for band in [low, *highs]) // 3


def test_known_shapes_at_the_papers_setting():
    assert mask_shapes(256, 5) == [(1, 12, 12), (1, 3, 130, 130), (1, 3, 67, 67), (1, 3, 36, 36),
                                   (1, 3, 20, 20), (1, 3, 12, 12)]


def test_default_levels_follow_the_image_size():
    assert [default_levels(size) for size in (16, 32, 64, 128, 256, 512)] == [2, 3, 4, 5, 5, 5]
    assert len(mask_shapes(32)) == 4


@pytest.mark.parametrize("size, levels", [(32, 6), (256, 9), ((64, 16), 5), (32, 0)])
def test_too_many_levels_is_a_clear_error(size, levels):
    with pytest.raises(ValueError, match=f"the maximum J for this size is {max_levels(size)}"):
        mask_shapes(size, levels)


def test_transform_refuses_images_too_small_for_its_levels():
    with pytest.raises(DXAIError, match="a 16x16 image supports 1 to 4 wavelet levels, not J=5"):
        WaveletTransform(5).decompose(torch.zeros(1, 3, 16, 16))


@pytest.mark.parametrize("wavelet", ["db3", "haar", "sym4", "bior2.2"])
@pytest.mark.parametrize("mode", ["zero", "symmetric", "periodization"])
@pytest.mark.parametrize("size", [(32, 32), (33, 45)])
def test_inverse_equals_pytorch_wavelets_and_inverts_the_transform(wavelet, mode, size):
    images = torch.rand(2, 3, *size)
    transform = WaveletTransform(3, wavelet, mode)
    bands = transform.decompose(images)
    low, highs = DWTForward(J=3, wave=wavelet, mode=mode)(images)
    expected = DWTInverse(wave=wavelet, mode=mode)((low, highs))
    torch.testing.assert_close(bands[0], low)
    torch.testing.assert_close(transform.reconstruct(bands), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(transform.reconstruct(bands, size), images, atol=1e-5, rtol=0)


def test_the_polyphase_inverse_returns_channels_last_images():
    transform = WaveletTransform(3)
    images = transform.reconstruct(transform.decompose(torch.rand(2, 3, 32, 32)), (32, 32))
    assert images.shape == (2, 3, 32, 32) and images.is_contiguous(memory_format=torch.channels_last)


def test_inverse_gradient_equals_pytorch_wavelets():
    transform = WaveletTransform(3)
    bands = [band.requires_grad_(True) for band in transform.decompose(torch.rand(2, 3, 32, 32))]
    upstream = torch.randn(2, 3, 32, 32)
    ours = torch.autograd.grad((transform.reconstruct(bands) * upstream).sum(), bands)
    reference = DWTInverse(wave="db3", mode="zero")((bands[0], bands[1:]))
    theirs = torch.autograd.grad((reference * upstream).sum(), bands)
    for mine, expected in zip(ours, theirs):
        torch.testing.assert_close(mine, expected, atol=1e-5, rtol=0)


def test_masks_flatten_unflatten_and_apply():
    shapes = mask_shapes(32, 3)
    mask = [torch.rand(4, *shape) for shape in shapes]
    flat = flatten_mask(mask)
    assert flat.shape == (4, mask_size(shapes))
    for band, restored in zip(mask, unflatten_mask(flat, shapes)):
        assert torch.equal(band, restored)
    with pytest.raises(ValueError, match="flat mask"):
        unflatten_mask(flat[:, 1:], shapes)

    coefficients = WaveletTransform(3).decompose(torch.rand(4, 3, 32, 32))
    kept = apply_mask(coefficients, ones_mask(shapes, 4))
    assert all(torch.equal(a, b) for a, b in zip(kept, coefficients))
    masked = apply_mask(coefficients, mask)
    for band, band_mask, result in zip(coefficients, mask, masked):
        for channel in range(3):   # one mask shared by every colour channel
            torch.testing.assert_close(result[:, channel], band[:, channel] * band_mask[:, 0])
