"""Shared fixtures: tiny configurations and a throw-away runs folder."""

from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Two cores shared by a test process and data workers: one torch thread is several times faster.
os.environ.setdefault("OMP_NUM_THREADS", "1")
warnings.filterwarnings("ignore", message=".*pkg_resources is deprecated.*")


@pytest.fixture
def tiny_overrides(tmp_path) -> list[str]:
    """Overrides that make any stage of the synthetic pipeline run in seconds."""
    return [
        f"run.runs_dir={tmp_path / 'runs'}", "run.run_name=tiny",
        "data.img_size=16", "data.train_size=64", "data.val_size=32", "data.batch_size=16",
        "classifier.max_steps=8", "classifier.val_every_steps=4",
        "trainer.progress_bar=false", "trainer.accelerator=cpu",
    ]
