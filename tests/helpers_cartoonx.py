"""Shared by the wavelet, RDE and CartoonX tests: one thread, and a small classifier trained
in seconds on synthetic shapes (32 px, 3 classes) so that explanations have something to find."""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from torch.nn import functional as F

from dxai.data.synthetic import SyntheticDataset
from dxai.data.transforms import Normalization
from dxai.explain.classifier_wrapper import NormalizedClassifier
from dxai.nets.classifier import build_classifier

IMG_SIZE = 32
NUM_CLASSES = 3


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Small tensors on a shared 2-core machine: a second thread mostly waits for the first."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def shapes_batch(count: int, seed: int) -> dict[str, torch.Tensor]:
    """``count`` synthetic shapes samples in [0, 1], stacked: image, label, class_part."""
    dataset = SyntheticDataset("shapes", NUM_CLASSES, size=count, img_size=IMG_SIZE, seed=seed)
    items = [dataset[index] for index in range(count)]
    return {"image": torch.stack([item["image"] for item in items]),
            "label": torch.tensor([item["label"] for item in items]),
            "class_part": torch.stack([item["class_part"] for item in items])}


@lru_cache(maxsize=1)
def trained_classifier() -> NormalizedClassifier:
    """The paper's small CNN after 8 epochs on 1024 images (about 97 % validation accuracy)."""
    torch.manual_seed(0)
    data = shapes_batch(1024, seed=0)
    normalization = Normalization.symmetric(3)
    model = build_classifier("simple", NUM_CLASSES, 3, IMG_SIZE)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(8):
        for batch in torch.randperm(1024).split(64):
            loss = F.cross_entropy(model(normalization.normalize(data["image"][batch])), data["label"][batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return NormalizedClassifier(model.eval(), normalization)
