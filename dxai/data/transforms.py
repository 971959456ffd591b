"""Training and evaluation transforms (albumentations) of images already read at the model's size.

Images come from ``dxai.images.read_image`` as H x W x C float arrays in [0, 1], resized the way
inference resizes them, so the evaluation transform only normalises and the training one adds
StarGAN-v2's augmentation.
"""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch

from dxai.normalization import Normalization


def train_transform(img_size: int, normalization: Normalization) -> A.Compose:
    """StarGAN-v2's training augmentation: random resized crop half the time, then a flip."""
    return A.Compose([
        A.RandomResizedCrop(size=(img_size, img_size), scale=(0.8, 1.0), ratio=(0.9, 1.1), p=0.5),
        A.HorizontalFlip(p=0.5),
        A.Normalize(mean=normalization.mean, std=normalization.std, max_pixel_value=1.0),
    ])


def eval_transform(img_size: int, normalization: Normalization) -> A.Compose:
    return A.Compose([A.Normalize(mean=normalization.mean, std=normalization.std, max_pixel_value=1.0)])


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """H x W x C float array -> C x H x W tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
