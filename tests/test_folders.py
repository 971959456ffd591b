import numpy as np
import pytest
import torch
from PIL import Image

from dxai.config import load_config
from dxai.data.datamodule import DXAIDataModule
from dxai.data.folders import DataError, FolderDataset


def make_tree(root, classes=("cat", "dog"), per_class=3, val_classes=None):
    """A StarGAN-v2 style tree with png and jpg files, a grey image and odd sizes."""
    rng = np.random.default_rng(0)
    for split, names in (("train", classes), ("val", val_classes or classes)):
        for name in names:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, size=(20 + i, 30, 3), dtype=np.uint8)
                suffix = ".png" if i % 2 else ".jpg"
                Image.fromarray(pixels).save(folder / f"{i}{suffix}")
    Image.fromarray(rng.integers(0, 255, size=(25, 25), dtype=np.uint8), mode="L").save(
        root / "train" / classes[0] / "grey.png")
    return root


def test_loads_png_jpg_and_grey_images(tmp_path):
    root = make_tree(tmp_path / "data")
    data = FolderDataset(root, "train", channels=3)
    assert len(data) == 7 and data.class_names == ["cat", "dog"]
    item = data[0]
    assert item["image"].shape[0] == 3 and item["image"].dtype == torch.float32
    grey = FolderDataset(root, "train", channels=1)
    assert all(grey[i]["image"].shape[0] == 1 for i in range(len(grey)))


def test_corrupt_file_is_skipped_and_reported_once(tmp_path, caplog):
    root = make_tree(tmp_path / "data")
    bad = root / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    data = FolderDataset(root, "train")
    assert len(data) == 7
    assert [s for s in data.skipped_files if "broken.jpg" in s]
    assert sum("broken.jpg" in r.getMessage() for r in caplog.records) == 1
    assert all(path != bad for path, _ in data.samples)


def test_empty_class_folder_is_reported(tmp_path, caplog):
    root = make_tree(tmp_path / "data")
    (root / "train" / "wild").mkdir()
    data = FolderDataset(root, "train")
    assert data.empty_classes == [str(root / "train" / "wild")]
    assert any("hold no images" in r.getMessage() for r in caplog.records)


def test_missing_root_and_split_say_what_is_expected(tmp_path):
    with pytest.raises(DataError, match="does not exist.*ROOT/train/<class>"):
        FolderDataset(tmp_path / "nowhere", "train")
    (tmp_path / "data" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="split folder .*val is missing"):
        FolderDataset(tmp_path / "data", "val")


def test_val_class_unknown_to_train_is_an_error(tmp_path):
    root = make_tree(tmp_path / "data", val_classes=("cat", "dog", "fox"))
    with pytest.raises(DataError, match="fox"):
        FolderDataset(root, "val", class_names=["cat", "dog"])


def test_datamodule_serves_folder_batches_in_model_range(tmp_path):
    root = make_tree(tmp_path / "data")
    cfg = load_config("folder", [f"data.root={root}", "data.img_size=16", "data.batch_size=4",
                                 "data.num_workers=0", "data.num_classes=2"])
    data = DXAIDataModule(cfg.data)
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (4, 3, 16, 16)
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert data.class_names == ["cat", "dog"]


def test_class_count_mismatch_is_an_error(tmp_path):
    root = make_tree(tmp_path / "data")
    cfg = load_config("afhq", [f"data.root={root}"])
    with pytest.raises(DataError, match="classes"):
        DXAIDataModule(cfg.data)


def test_data_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DXAI_DATA", str(tmp_path / "elsewhere"))
    assert load_config("afhq").data.root == str(tmp_path / "elsewhere")
