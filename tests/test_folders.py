import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dxai.config import load_config
from dxai.data import folders, scan_cache
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


def test_a_decompression_bomb_among_training_images_is_skipped_and_listed(tmp_path):
    root = make_tree(tmp_path / "data")
    Image.new("1", (14000, 14000)).save(root / "train" / "cat" / "bomb.png")
    data = FolderDataset(root, "train")
    assert len(data) == 7 and [s for s in data.skipped_files if "bomb.png" in s]


def test_class_folder_without_a_readable_image_is_an_error_naming_it(tmp_path):
    root = make_tree(tmp_path / "data")
    (root / "train" / "wild").mkdir()
    with pytest.raises(DataError, match=r"train/wild \(no image files\)"):
        FolderDataset(root, "train")
    (root / "train" / "wild" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"train/wild \(all 1 unreadable\)"):
        FolderDataset(root, "train")


def test_one_class_tree_is_an_error(tmp_path):
    root = make_tree(tmp_path / "data", classes=("cat",))
    cfg = load_config("folder", [f"data.root={root}", "data.num_classes=1", "data.num_workers=0"])
    with pytest.raises(DataError, match="at least two"):
        DXAIDataModule(cfg.data)


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


def folder_config(root, *overrides):
    return load_config("folder", [f"data.root={root}", "data.img_size=16", "data.batch_size=4",
                                  "data.num_workers=0", "data.num_classes=2", *overrides])


def test_split_smaller_than_a_stage_batch_names_the_stage_the_counts_and_the_fix(tmp_path):
    root = make_tree(tmp_path / "data")  # 7 training images
    cfg = folder_config(root)
    with pytest.raises(DataError, match=r"masks stage .* batches of 32 \(masks.batch_size\).* has 7 images.*"
                                        r"masks.batch_size=7"):
        DXAIDataModule(cfg.data, batch_size=32, stage="masks").train_dataloader()
    with pytest.raises(DataError, match=r"classifier stage .* 4 per process on 2 processes.*--batch-size 4"):
        DXAIDataModule(folder_config(root, "data.batch_size=5").data).check_batch_size(world_size=2)
    DXAIDataModule(cfg.data, batch_size=7, stage="masks").check_batch_size()  # exactly one full batch


def counting_decodes(monkeypatch) -> list:
    calls = []
    verify = folders._is_readable

    def counted(path):
        calls.append(path)
        return verify(path)

    monkeypatch.setattr(folders, "_is_readable", counted)
    return calls


def test_second_open_decodes_nothing_and_a_changed_file_is_verified_again(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "data")
    calls = counting_decodes(monkeypatch)
    first = FolderDataset(root, "train")
    assert len(calls) == 7 and (root / ".dxai-scan-train.json").is_file()
    calls.clear()
    second = FolderDataset(root, "train")
    assert calls == [] and second.samples == first.samples
    changed = root / "train" / "cat" / "1.png"
    Image.fromarray(np.zeros((9, 9, 3), dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))  # a new mtime even on coarse file systems
    (root / "train" / "dog" / "new.png").write_bytes(changed.read_bytes())
    FolderDataset(root, "train")
    assert sorted(p.name for p in calls) == ["1.png", "new.png"]
    calls.clear()
    FolderDataset(root, "train")
    assert calls == []


def test_broken_files_are_not_cached_as_readable(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "data")
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    FolderDataset(root, "train")
    calls = counting_decodes(monkeypatch)
    data = FolderDataset(root, "train")
    assert [p.name for p in calls] == ["broken.jpg"] and len(data) == 7


def test_scan_cache_goes_to_the_home_cache_when_the_root_is_read_only(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write = scan_cache.atomic_write_text

    def read_only_root(path, text):
        if Path(path).parent == root:
            raise PermissionError(13, "Permission denied", str(path))
        write(path, text)

    monkeypatch.setattr(scan_cache, "atomic_write_text", read_only_root)
    FolderDataset(root, "train")
    cached = list((tmp_path / "cache" / "dxai").glob("scan-*-train.json"))
    assert len(cached) == 1 and len(json.loads(cached[0].read_text())["files"]) == 7
    assert not (root / ".dxai-scan-train.json").exists()
    calls = counting_decodes(monkeypatch)
    FolderDataset(root, "train")
    assert calls == []


def test_a_file_deleted_during_training_is_replaced_with_a_warning(tmp_path, caplog):
    root = make_tree(tmp_path / "data")
    data = FolderDataset(root, "train", img_size=16)
    path, _ = data.samples[2]
    path.unlink()
    with caplog.at_level(logging.WARNING):
        item = data[2]
        data[2]
    assert item["image"].shape == (3, 16, 16)
    assert sum(str(path) in r.getMessage() for r in caplog.records) == 1


def test_data_gone_during_training_is_one_sentence_even_from_a_worker(tmp_path):
    root = make_tree(tmp_path / "data")
    data = FolderDataset(root, "train", img_size=16)
    for path, _ in data.samples:
        path.unlink()
    loader = DataLoader(data, batch_size=2, num_workers=1)
    with pytest.raises(DataError) as error:
        next(iter(loader))
    message = str(error.value)
    assert "Traceback" not in message and "cannot be read any more" in message and "last.ckpt" in message
