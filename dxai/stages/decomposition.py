"""Decomposition stage: train the DXAI generator, mapping network and discriminator (eq. 5, 14).

The EMA weights kept are those of the validation whose agnostic part the independent classifiers
find most neutral, or with a null class the emptiest (``DecompositionModule.restore_selected``);
metrics.json says which iteration.

The results are ``<run>/checkpoints/decomposition/{generator_ema,mapping_ema,discriminator}
.safetensors`` (read them back with ``dxai.run_folder.load_decomposition``) and the
``decomposition`` section of metrics.json.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn

from dxai.config import Config
from dxai.data.batches import first_batch
from dxai.data.datamodule import DXAIDataModule
from dxai.io import read_metrics, update_metrics
from dxai.run_folder import (
    DECOMPOSITION_WEIGHTS,
    decomposition_path,
    load_classifier,
    load_independent_classifiers,
    resume_path,
    save_weights,
)
from dxai.stages import masks
from dxai.training.common import make_trainer, single_cpu_process
from dxai.training.decomposition import (
    OPTIMIZER_STEPS_PER_ITERATION,
    STAGE,
    DecompositionError,
    DecompositionModule,
    gan_strategy,
)


def check_classifier(classifier: nn.Module, cfg: Config, class_names: list[str]) -> None:
    """The classifier must output one logit per class of the data set."""
    dummy = torch.zeros(1, cfg.data.img_channels, cfg.data.img_size, cfg.data.img_size)
    with torch.no_grad():
        outputs = classifier(dummy).shape[-1]
    if outputs != cfg.data.num_classes or len(class_names) != cfg.data.num_classes:
        raise DecompositionError(
            f"the classifier outputs {outputs} classes, data.num_classes is {cfg.data.num_classes} and the data "
            f"set has {len(class_names)} ({class_names}); train the classifier on this data set "
            "(python train.py --stage classifier) or fix data.num_classes")


class BothCoresFrom(pl.Callback):
    """From iteration ``start`` on, a single CPU process with ``trainer.cpu_threads`` set also takes the
    core of the background process beside it (the masks stage's reference; 1.7x the iterations/s on two
    cores). It waits there for that process to end: at a fixed iteration, so that the run's arithmetic,
    which depends on the thread count, does not depend on how fast the other process was."""

    def __init__(self, start: int, threads: int, processes: list):
        self.start, self.threads, self.processes, self.switched = start, threads, processes, False

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if not self.switched and module.iteration >= self.start:
            for process in self.processes:
                process.join()
            torch.set_num_threads(self.threads)
            self.switched = True


def save_decomposition(module: DecompositionModule, run_dir: Path) -> None:
    networks = {"generator_ema": module.generator_ema, "mapping_ema": module.mapping_ema,
                "discriminator": module.discriminator}
    for name, network in networks.items():
        save_weights(network, decomposition_path(run_dir, name))


def is_done(cfg: Config, run_dir: Path) -> bool:
    weights = all(decomposition_path(run_dir, name).is_file() for name in DECOMPOSITION_WEIGHTS)
    return weights and "recon_psnr" in read_metrics(run_dir).get(STAGE, {})


def run(cfg: Config, run_dir: Path) -> dict:
    """Train (or resume) the decomposition, save the EMA networks, record the validation metrics."""
    d = cfg.decomposition
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    data = DXAIDataModule(cfg.data, batch_size=d.batch_size, stage=STAGE)
    classifier = load_classifier(cfg, run_dir)
    check_classifier(classifier, cfg, data.class_names)
    module = DecompositionModule(cfg, classifier, first_batch(data.val_set, d.num_panel_images),
                                 load_independent_classifiers(cfg, run_dir))
    gan_cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, strategy=gan_strategy(cfg.trainer)))
    trainer = make_trainer(gan_cfg, run_dir, STAGE, max_steps=OPTIMIZER_STEPS_PER_ITERATION * d.max_steps,
                           val_every_steps=min(d.val_every_steps, d.max_steps) or None,
                           steps_per_batch=OPTIMIZER_STEPS_PER_ITERATION)
    threads = torch.get_num_threads()
    if cfg.trainer.cpu_threads and single_cpu_process(cfg.trainer):
        start = min(d.val_every_steps, d.max_steps) if d.both_cores_from is None else d.both_cores_from
        trainer.callbacks.append(BothCoresFrom(start, 2 * cfg.trainer.cpu_threads, masks.early_processes()))
    try:
        with warnings.catch_warnings():
            # Both are intended: the frozen classifier stays in eval mode, and a checkpoint holds the
            # state after an iteration's updates, which is where a resumed run must continue.
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode")
            warnings.filterwarnings("ignore", message=".*ModelCheckpoint with manual optimization")
            trainer.fit(module, datamodule=data, ckpt_path=resume_path(run_dir, STAGE))
    finally:
        torch.set_num_threads(threads)
    selection = module.restore_selected()  # the kept EMA weights, validated once more below
    trainer.validate(module, datamodule=data, verbose=False)
    results = {**module.metrics, "iterations": module.iteration, **selection}
    if trainer.is_global_zero:
        save_decomposition(module, run_dir)
        update_metrics(run_dir, STAGE, results)
    trainer.strategy.barrier("decomposition saved")
    return results
