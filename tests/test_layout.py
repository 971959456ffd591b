import pytest
import torch
from torch.nn import functional as F

from dxai.layout import pixel_shuffle_2x


@pytest.mark.parametrize("channels", [4, 12])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_the_channels_last_pixel_shuffle_equals_torchs(channels, memory_format):
    x = torch.randn(2, channels, 5, 7).contiguous(memory_format=memory_format).requires_grad_()
    ours, theirs = pixel_shuffle_2x(x), F.pixel_shuffle(x, 2)
    assert ours.shape == theirs.shape and torch.equal(ours, theirs)
    assert ours.is_contiguous(memory_format=torch.channels_last)
    weights = torch.randn_like(theirs)
    (gradient_ours,) = torch.autograd.grad((ours * weights).sum(), x)
    (gradient_theirs,) = torch.autograd.grad((theirs * weights).sum(), x)
    assert torch.equal(gradient_ours, gradient_theirs)

