"""The classifiers to be explained: a torchvision ResNet18 and the DXAI paper's small CNN.

Both take images in the model domain ([-1, 1], see ``dxai.data.transforms``) and return logits.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

from dxai.errors import DXAIError

ARCHITECTURES = ("resnet18", "simple")


def resnet18_classifier(num_classes: int, channels: int = 3, img_size: int = 224) -> nn.Module:
    """ResNet18 adapted to the channel count; below 128 px a gentler stem.

    The ImageNet stem (7x7 stride 2 + max-pool) shrinks a 32 px image to 8 px before the first
    block; for small images a 3x3 stride-1 convolution before the max-pool keeps twice that.
    """
    model = resnet18(weights=None, num_classes=num_classes)
    if img_size < 128:
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    elif channels != 3:
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


class SimpleClassifier(nn.Module):
    """The DXAI paper's table 6: conv 16 - pool 3 - conv 32 - pool 3 - fc 128 - fc c."""

    def __init__(self, num_classes: int, channels: int = 3, img_size: int = 256):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.MaxPool2d(3), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.MaxPool2d(3),
        )
        side = img_size // 3 // 3
        if side < 1:
            raise DXAIError(f"the simple classifier needs images of at least 9 px, not {img_size}")
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * side * side, 128), nn.ReLU(),
                                  nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_classifier(arch: str, num_classes: int, channels: int, img_size: int) -> nn.Module:
    if arch == "resnet18":
        return resnet18_classifier(num_classes, channels, img_size)
    if arch == "simple":
        return SimpleClassifier(num_classes, channels, img_size)
    raise DXAIError(f"unknown classifier architecture {arch!r}; choose one of {ARCHITECTURES}")
