"""The LightningDataModule that serves synthetic and folder data sets alike.

Batches are dicts: ``image`` (B x C x H x W in [-1, 1]) and ``label``; synthetic batches also
carry the ground-truth ``background`` and ``class_part`` in the same units. Each training stage
makes its own module with its own batch size; a training split too small for one full batch
per process (the loader drops the last, partial batch) is an error that names the stage, the
counts and the setting to change, never an empty loader.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from dxai.config import DataConfig
from dxai.data.folders import DataError, FolderDataset, list_classes
from dxai.data.synthetic import SyntheticDataset
from dxai.data.transforms import eval_transform, train_transform
from dxai.normalization import Normalization


def build_datasets(cfg: DataConfig) -> tuple:
    """(train, val) data sets for a data configuration, with clear errors for bad input."""
    normalization = Normalization.symmetric(cfg.img_channels)
    if cfg.kind == "synthetic":
        common = dict(family=cfg.family, num_classes=cfg.num_classes, img_size=cfg.img_size,
                      channels=cfg.img_channels, normalization=normalization)
        return (SyntheticDataset(size=cfg.train_size, seed=cfg.seed, **common),
                SyntheticDataset(size=cfg.val_size, seed=cfg.seed + 1, **common))
    if cfg.kind != "folder":
        raise DataError(f"unknown data kind {cfg.kind!r}; use 'synthetic' or 'folder'")
    if not cfg.root:
        raise DataError("this data set needs a data root: pass --data-root PATH or set DXAI_DATA "
                        "(layout ROOT/train/<class>/*, ROOT/val/<class>/*)")
    root = Path(cfg.root).expanduser()
    classes = list_classes(root, "train")
    if len(classes) < 2:
        raise DataError(f"{root / 'train'} has one class folder {classes}; DXAI explains what tells classes apart, "
                        "so it needs at least two: ROOT/train/<class>/* with one folder per class")
    if cfg.class_names and sorted(cfg.class_names) != classes:
        raise DataError(f"{root / 'train'} has classes {classes}, but the configuration expects "
                        f"{sorted(cfg.class_names)}; fix the folders or set data.class_names")
    if len(classes) != cfg.num_classes:
        raise DataError(f"{root / 'train'} has {len(classes)} classes {classes}, but data.num_classes is "
                        f"{cfg.num_classes}; set data.num_classes={len(classes)}")
    train_tf = (train_transform if cfg.augment else eval_transform)(cfg.img_size, normalization)
    train = FolderDataset(root, "train", cfg.img_channels, cfg.img_size, train_tf, class_names=classes)
    val = FolderDataset(root, "val", cfg.img_channels, cfg.img_size, eval_transform(cfg.img_size, normalization),
                        class_names=classes)
    return train, val


class DXAIDataModule(pl.LightningDataModule):
    """The data of one stage: ``batch_size`` is the stage's own setting (None: ``data.batch_size``);
    ``stage`` names the stage in errors."""

    def __init__(self, cfg: DataConfig, batch_size: int | None = None, stage: str = "classifier"):
        super().__init__()
        self.cfg, self.stage = cfg, stage
        self.batch_size = batch_size or cfg.batch_size
        self.batch_key = f"{stage}.batch_size" if batch_size else "data.batch_size"
        self.normalization = Normalization.symmetric(cfg.img_channels)
        self.train_set, self.val_set = build_datasets(cfg)
        self.class_names: list[str] = list(self.train_set.class_names)

    def check_batch_size(self, world_size: int = 1) -> None:
        """A full training batch for each of ``world_size`` processes, or a ``DataError`` with the fix."""
        count = len(self.train_set)
        per_process = math.ceil(count / max(world_size, 1))
        if per_process >= self.batch_size:
            return
        where = (f"the training split {Path(self.cfg.root).expanduser() / 'train'}" if self.cfg.kind == "folder"
                 else "the synthetic training set (data.train_size)")
        split = f", {per_process} per process on {world_size} processes" if world_size > 1 else ""
        fix = (f"--batch-size {per_process} (data.batch_size)" if self.batch_key == "data.batch_size"
               else f"{self.batch_key}={per_process}")
        raise DataError(f"the {self.stage} stage trains on batches of {self.batch_size} ({self.batch_key}), but "
                        f"{where} has {count} images{split}: not one full batch. Pass {fix} or smaller, "
                        "or add training images")

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, drop_last=shuffle,
                          num_workers=self.cfg.num_workers, persistent_workers=self.cfg.num_workers > 0,
                          pin_memory=False)

    def train_dataloader(self) -> DataLoader:
        self.check_batch_size(self.trainer.world_size if self.trainer is not None else 1)
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
