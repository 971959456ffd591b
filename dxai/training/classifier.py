"""Classifier stage: train (or adopt) the classifier to be explained, then freeze it.

The result is ``<run>/checkpoints/classifier/classifier.safetensors``; every later stage
loads it with ``load_classifier``. A user's own weights (``--classifier-weights``) are
checked against the data set's class count and the architecture, then adopted as they are.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from dxai.config import Config
from dxai.data.datamodule import DXAIDataModule
from dxai.errors import DXAIError
from dxai.evaluation.decomposition_metrics import top_probability
from dxai.io import read_metrics, update_metrics
from dxai.nets.classifier import build_classifier
from dxai.training.common import checkpoint_dir, make_trainer, resume_path


class ClassifierError(DXAIError):
    """Classifier weights that do not fit the configuration."""


def classifier_path(run_dir: Path) -> Path:
    return checkpoint_dir(run_dir, "classifier") / "classifier.safetensors"


def build_configured_classifier(cfg: Config) -> nn.Module:
    return build_classifier(cfg.classifier.arch, cfg.data.num_classes, cfg.data.img_channels, cfg.data.img_size)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights from .safetensors, or a torch state dict / Lightning checkpoint (tensors only)."""
    path = Path(path)
    if not path.is_file():
        raise ClassifierError(f"classifier weights {path} do not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
    if not isinstance(state, dict):
        raise ClassifierError(f"{path} holds no state dict of classifier weights")
    return state


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], source: Path, cfg: Config) -> nn.Module:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ClassifierError(
            f"{source} does not fit a {cfg.classifier.arch} classifier ({len(missing)} missing, "
            f"{len(unexpected)} unexpected tensors, e.g. {(missing or unexpected)[:3]}); "
            f"pass --classifier with the architecture these weights were trained as")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ClassifierError(
                f"{source}: tensor {name} has shape {tuple(tensor.shape)} but the configuration needs "
                f"{tuple(expected[name].shape)} ({cfg.data.num_classes} classes, {cfg.data.img_channels} "
                f"channels, {cfg.data.img_size} px); weights trained for another class count, channel "
                "count or image size do not fit this data set")
    model.load_state_dict(state)
    return model


def load_classifier(cfg: Config, run_dir: Path) -> nn.Module:
    """The run's frozen classifier in eval mode (input: images in [-1, 1]; output: logits)."""
    path = classifier_path(run_dir)
    if not path.is_file():
        raise ClassifierError(f"{path} is missing; run the classifier stage first "
                              "(python train.py --stage classifier)")
    model = load_weights_into(build_configured_classifier(cfg), load_file(str(path)), path, cfg)
    model.eval().requires_grad_(False)
    return model


def neutrality_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy toward the uniform distribution: log(c) exactly when ``logits`` are neutral."""
    return -F.log_softmax(logits, dim=1).mean(1).mean()


class ClassifierModule(pl.LightningModule):
    def __init__(self, model: nn.Module, lr: float, weight_decay: float, max_steps: int,
                 neutral_background_weight: float = 0.0):
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.max_steps = lr, weight_decay, max_steps
        self.neutral_background_weight = neutral_background_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        logits = self.model(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        accuracy = (logits.argmax(1) == batch["label"]).float().mean()
        self.log_dict({"train/loss": loss, "train/accuracy": accuracy}, prog_bar=True)
        if self.neutral_background_weight:
            neutrality = neutrality_loss(self.model(batch["background"]))
            self.log("train/background_neutrality", neutrality)
            loss = loss + self.neutral_background_weight * neutrality
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self.model(batch["image"])
        self.log("val_accuracy", (logits.argmax(1) == batch["label"]).float().mean(), prog_bar=True,
                 sync_dist=True)
        self.log("val/loss", F.cross_entropy(logits, batch["label"]), sync_dist=True)
        if "background" in batch:
            self.log("val_background_max_prob", top_probability(self.model, batch["background"]).mean(),
                     sync_dist=True)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.lr, total_steps=self.max_steps,
                                                       pct_start=0.15)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def is_done(cfg: Config, run_dir: Path) -> bool:
    return classifier_path(run_dir).is_file() and "val_accuracy" in read_metrics(run_dir).get("classifier", {})


def run(cfg: Config, run_dir: Path) -> dict:
    """Train the classifier (or adopt ``classifier.weights``), save it, record val accuracy."""
    if cfg.classifier.neutral_background_weight and cfg.data.kind != "synthetic":
        raise ClassifierError("classifier.neutral_background_weight needs the true backgrounds of "
                              "synthetic data; set it to 0 for folder data sets")
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    data = DXAIDataModule(cfg.data)
    model = build_configured_classifier(cfg)
    max_steps = cfg.classifier.max_steps
    if cfg.classifier.weights:
        source = Path(cfg.classifier.weights)
        load_weights_into(model, read_state_dict(source), source, cfg)
        max_steps = 0
    module = ClassifierModule(model, cfg.classifier.lr, cfg.classifier.weight_decay, max(max_steps, 1),
                              cfg.classifier.neutral_background_weight)
    trainer = make_trainer(cfg, run_dir, "classifier", max_steps=max_steps,
                           val_every_steps=min(cfg.classifier.val_every_steps, max_steps) or None,
                           monitor=None)
    if max_steps:
        trainer.fit(module, datamodule=data, ckpt_path=resume_path(run_dir, "classifier"))
    results = trainer.validate(module, datamodule=data, verbose=False)
    accuracy = float(results[0]["val_accuracy"])
    background_max_prob = results[0].get("val_background_max_prob")
    if trainer.is_global_zero:
        path = classifier_path(run_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
        tmp.replace(path)
        metrics = {"val_accuracy": accuracy, "arch": cfg.classifier.arch, "steps": trainer.global_step,
                   "weights": str(cfg.classifier.weights or path)}
        if background_max_prob is not None:  # synthetic data: top probability on the true backgrounds
            metrics["background_max_prob"] = float(background_max_prob)
        update_metrics(run_dir, "classifier", metrics)
    return {"val_accuracy": accuracy}
