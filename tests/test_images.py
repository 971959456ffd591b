"""One image loader for training folders and inference: same tensor for the same file, whatever its mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dxai.data.folders import FolderDataset
from dxai.data.transforms import eval_transform
from dxai.images import ImageReadError, load_for_model, read_image
from dxai.normalization import Normalization

SIZE = 16


def write_images(folder):
    """An RGBA, a 16-bit grey and a palette PNG, 24 x 24 (so both loaders resize)."""
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (24, 24, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    grey16 = (np.linspace(0, 65535, 24 * 24).reshape(24, 24)).astype(np.uint16)
    Image.fromarray(grey16).save(folder / "grey16.png")
    palette = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), "RGB").convert("P")
    palette.save(folder / "palette.png")
    return ["grey16.png", "palette.png", "rgba.png"]


def test_training_and_inference_read_the_same_tensor(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "only").mkdir(parents=True)
        names = write_images(tmp_path / split / "only")
    normalization = Normalization.symmetric(3)
    dataset = FolderDataset(tmp_path, "val", 3, SIZE, eval_transform(SIZE, normalization))
    assert [path.name for path, _ in dataset.samples] == names
    for index, name in enumerate(names):
        training = normalization.denormalize(dataset[index]["image"])
        inference = load_for_model(tmp_path / "val" / "only" / name, 3, SIZE).image
        torch.testing.assert_close(training, inference, atol=1e-6, rtol=0)


def test_sixteen_bit_grey_is_scaled_not_saturated(tmp_path):
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(tmp_path / "mid.png")
    notes = []
    pixels = read_image(tmp_path / "mid.png", 3, 8, notes)
    assert pixels.shape == (8, 8, 3)
    assert pixels.mean() == pytest.approx(0.5, abs=1e-3)
    assert "16-bit grey image scaled to [0, 1]" in notes


def test_alpha_is_composited_on_white(tmp_path):
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert read_image(tmp_path / "clear.png", 3, 4).min() == pytest.approx(1.0)


def test_a_decompression_bomb_is_a_read_error(tmp_path):
    Image.new("1", (14000, 14000)).save(tmp_path / "bomb.png")
    with pytest.raises(ImageReadError, match="bomb.png"):
        read_image(tmp_path / "bomb.png", 3, 8)
    assert load_for_model(tmp_path / "bomb.png", 3, 8).error is not None
