"""Shared fixtures: tiny configurations and a throw-away runs folder; for the wavelet, RDE and
CartoonX tests, one thread and a small classifier trained in seconds on synthetic shapes (32 px,
3 classes) so that explanations have something to find."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from torch.nn import functional as F

from dxai.data.synthetic import SyntheticDataset
from dxai.explain.classifier_wrapper import NormalizedClassifier
from dxai.nets.classifier import build_classifier
from dxai.normalization import Normalization

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Two cores shared by a test process and data workers: one torch thread is several times faster.
os.environ.setdefault("OMP_NUM_THREADS", "1")
warnings.filterwarnings("ignore", message=".*pkg_resources is deprecated.*")

SHAPES_IMG_SIZE = 32
SHAPES_CLASSES = 3


@pytest.fixture
def tiny_overrides(tmp_path) -> list[str]:
    """Overrides that make any stage of the synthetic pipeline run in seconds."""
    return [
        f"run.runs_dir={tmp_path / 'runs'}", "run.run_name=tiny",
        "data.img_size=16", "data.train_size=64", "data.val_size=32", "data.batch_size=16",
        "classifier.max_steps=8", "classifier.val_every_steps=4",
        "trainer.progress_bar=false", "trainer.accelerator=cpu",
    ]


@pytest.fixture(scope="module")
def single_thread():
    """Small tensors on a shared 2-core machine: a second thread mostly waits for the first."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_shapes_batch(count: int, seed: int) -> dict[str, torch.Tensor]:
    """``count`` synthetic shapes samples in [0, 1], stacked: image, label, class_part."""
    dataset = SyntheticDataset("shapes", SHAPES_CLASSES, size=count, img_size=SHAPES_IMG_SIZE, seed=seed)
    items = [dataset[index] for index in range(count)]
    return {"image": torch.stack([item["image"] for item in items]),
            "label": torch.tensor([item["label"] for item in items]),
            "class_part": torch.stack([item["class_part"] for item in items])}


@pytest.fixture(scope="session")
def shapes_batch():
    """``shapes_batch(count, seed)``: see ``make_shapes_batch``."""
    return make_shapes_batch


@pytest.fixture(scope="session")
def trained_classifier() -> NormalizedClassifier:
    """The paper's small CNN after 8 epochs on 1024 images (about 97 % validation accuracy)."""
    torch.manual_seed(0)
    data = make_shapes_batch(1024, seed=0)
    normalization = Normalization.symmetric(3)
    model = build_classifier("simple", SHAPES_CLASSES, 3, SHAPES_IMG_SIZE)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(8):
        for batch in torch.randperm(1024).split(64):
            loss = F.cross_entropy(model(normalization.normalize(data["image"][batch])), data["label"][batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return NormalizedClassifier(model.eval(), normalization)
