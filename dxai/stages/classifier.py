"""Classifier stage: train (or adopt) the classifier to be explained, then freeze it.

The result is ``<run>/checkpoints/classifier/classifier.safetensors``; every later stage
loads it with ``dxai.run_folder.load_classifier``. A user's own weights
(``--classifier-weights``) are checked against the data set's class count and the
architecture, then adopted as they are.

After it, ``classifier.independent`` classifiers are trained by the same recipe with another seed
on other training images (a synthetic training set of another seed; a seeded half of a folder's
training split): ``independent_<k>.safetensors``; on one CPU process (``start_independent``) the
first half of them train in a second process beside the explained one. Nothing is trained against
them; they judge whether an agnostic part is neutral for classifiers other than the one it was made for.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch.utils.data import Subset

from dxai.background import start_process
from dxai.config import Config
from dxai.data.datamodule import DXAIDataModule, build_datasets
from dxai.errors import DXAIError
from dxai.io import read_metrics, update_metrics
from dxai.models import build_configured_classifier
from dxai.run_folder import (
    classifier_path,
    independent_classifier_path,
    load_weights_into,
    read_state_dict,
    resume_path,
    save_weights,
)
from dxai.training.classifier import ClassifierModule
from dxai.training.common import make_trainer, single_cpu_process


class ResumableClassifierModule(ClassifierModule):
    """A classifier that can be resumed with another ``max_steps``: the one-cycle schedule restored
    from ``last.ckpt`` is stretched (or shrunk) to the new total, keeping the step it reached, instead
    of stopping with torch's "Tried to step N times" when training goes on past the old total."""

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        fresh = self.configure_optimizers()["lr_scheduler"]["scheduler"].state_dict()
        for state in checkpoint.get("lr_schedulers", []):
            if state.get("total_steps") not in (None, fresh["total_steps"]):
                state["total_steps"] = fresh["total_steps"]
                state["_schedule_phases"] = fresh["_schedule_phases"]


INDEPENDENT_SEED_STRIDE = 1000  # seeds (training and synthetic data) of the k-th independent classifier


def is_done(cfg: Config, run_dir: Path) -> bool:
    independent = all(independent_classifier_path(run_dir, k).is_file() for k in range(cfg.classifier.independent))
    return (classifier_path(run_dir).is_file() and independent
            and "val_accuracy" in read_metrics(run_dir).get("classifier", {}))


def independent_data(cfg: Config, index: int) -> DXAIDataModule:
    """The data of the ``index``-th independent classifier: the same validation split, other training
    images (synthetic: a training set of another seed; folders: a seeded half of the training split)."""
    offset = INDEPENDENT_SEED_STRIDE * (index + 1)
    data = DXAIDataModule(cfg.data)
    if cfg.data.kind == "synthetic":
        data.train_set, _ = build_datasets(dataclasses.replace(cfg.data, seed=cfg.data.seed + offset))
    else:
        order = torch.randperm(len(data.train_set), generator=torch.Generator().manual_seed(cfg.trainer.seed + offset))
        data.train_set = Subset(data.train_set, order[:max(len(order) // 2, 1)].tolist())
    return data


def train_independent(cfg: Config, run_dir: Path, index: int) -> dict:
    """Train the ``index``-th independent classifier (resumable like the explained one) and save it."""
    c = cfg.classifier
    pl.seed_everything(cfg.trainer.seed + INDEPENDENT_SEED_STRIDE * (index + 1), workers=True, verbose=False)
    data = independent_data(cfg, index)
    model = build_configured_classifier(cfg)
    max_steps = c.independent_max_steps or c.max_steps
    module = ResumableClassifierModule(model, c.lr, c.weight_decay, max_steps, c.neutral_background_weight)
    stage = f"classifier_independent_{index}"
    trainer = make_trainer(cfg, run_dir, stage, max_steps=max_steps,
                           val_every_steps=min(c.val_every_steps, max_steps))
    trainer.fit(module, datamodule=data, ckpt_path=resume_path(run_dir, stage))
    results = trainer.validate(module, datamodule=data, verbose=False)[0]
    if trainer.is_global_zero:
        save_weights(model, independent_classifier_path(run_dir, index))
    trainer.strategy.barrier("independent classifier saved")
    metrics = {"val_accuracy": float(results["val_accuracy"]), "steps": trainer.global_step,
               "training_images": len(data.train_set)}
    if "val_background_max_prob" in results:
        metrics["background_max_prob"] = float(results["val_background_max_prob"])
    return metrics


def _independent_worker(cfg: Config, run_dir: str, indices: list[int], results) -> None:
    # one progress bar on the terminal, the parent's; this process's progress lines go to train.log
    cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, progress_bar=False))
    for index in indices:
        results.put((index, train_independent(cfg, Path(run_dir), index)))


def start_independent(cfg: Config, run_dir: Path):
    """On one CPU process with ``trainer.cpu_threads`` set (a core left idle), the first half of the
    independent classifiers train in a second (spawned) process while this one trains the explained
    classifier and then the rest. Returns the process (or None), the queue of its ``(index, metrics)``
    and the indices it trains; what it leaves undone (it failed, or was stopped) the stage trains
    itself after it."""
    count = cfg.classifier.independent
    if count == 0 or not cfg.trainer.cpu_threads or not single_cpu_process(cfg.trainer):
        return None, None, []
    results, indices = multiprocessing.get_context("spawn").SimpleQueue(), list(range((count + 1) // 2))
    process = start_process(_independent_worker, (cfg, str(run_dir), indices, results),
                            "dxai-independent-classifiers", cfg.trainer.cpu_threads)
    return process, results, indices


def run(cfg: Config, run_dir: Path) -> dict:
    """Train the classifier (or adopt ``classifier.weights``), save it, record val accuracy."""
    if cfg.classifier.neutral_background_weight and cfg.data.kind != "synthetic":
        raise DXAIError("classifier.neutral_background_weight needs the true backgrounds of "
                              "synthetic data; set it to 0 for folder data sets")
    count = cfg.classifier.independent
    background, background_results, in_background = start_independent(cfg, run_dir)
    try:
        accuracy = train_explained(cfg, run_dir)
        independent = {index: train_independent(cfg, run_dir, index) for index in range(count)
                       if index not in in_background}
        if background is not None:
            background.join()
            while not background_results.empty():
                index, metrics = background_results.get()
                independent[index] = metrics
        for index in in_background:
            if index not in independent:  # the background process did not finish it: resumed here
                independent[index] = train_independent(cfg, run_dir, index)
    except BaseException:
        if background is not None:
            background.terminate()
        raise
    independent = [independent[index] for index in range(count)]
    if rank_zero_only.rank == 0:
        update_metrics(run_dir, "classifier", {"independent": independent})
    return {"val_accuracy": accuracy, "independent_val_accuracy": [r["val_accuracy"] for r in independent]}


def train_explained(cfg: Config, run_dir: Path) -> float:
    """Train the classifier to be explained (or adopt ``classifier.weights``), save it and record
    its metrics; returns its validation accuracy."""
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    data = DXAIDataModule(cfg.data)
    model = build_configured_classifier(cfg)
    max_steps = cfg.classifier.max_steps
    if cfg.classifier.weights:
        source = Path(cfg.classifier.weights)
        load_weights_into(model, read_state_dict(source), source, cfg)
        max_steps = 0
    module = ResumableClassifierModule(model, cfg.classifier.lr, cfg.classifier.weight_decay, max(max_steps, 1),
                              cfg.classifier.neutral_background_weight)
    trainer = make_trainer(cfg, run_dir, "classifier", max_steps=max_steps,
                           val_every_steps=min(cfg.classifier.val_every_steps, max_steps) or None)
    if max_steps:
        trainer.fit(module, datamodule=data, ckpt_path=resume_path(run_dir, "classifier"))
    results = trainer.validate(module, datamodule=data, verbose=False)
    accuracy = float(results[0]["val_accuracy"])
    background_max_prob = results[0].get("val_background_max_prob")
    if trainer.is_global_zero:
        path = classifier_path(run_dir)
        save_weights(model, path)
        metrics = {"val_accuracy": accuracy, "arch": cfg.classifier.arch, "steps": trainer.global_step,
                   "weights": str(cfg.classifier.weights or path)}
        if background_max_prob is not None:  # synthetic data: top probability on the true backgrounds
            metrics["background_max_prob"] = float(background_max_prob)
        update_metrics(run_dir, "classifier", metrics)
    trainer.strategy.barrier("classifier saved")  # the other ranks read it in the next stage
    return accuracy
