"""What every training stage shares: the Trainer, its logger, checkpoints and image panels.

A stage's checkpoints live in ``<run>/checkpoints/<stage>/`` with ``last.ckpt`` for resuming.
Loggers: wandb (offline unless an API key is configured; it never waits for a login) or CSV,
with image panels saved as PNG under ``<run>/report/panels/`` in the CSV case.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from dxai.config import Config
from dxai.errors import DXAIError
from dxai.panels import titled_grid

log = logging.getLogger(__name__)
LOGGERS = ("csv", "wandb")


def checkpoint_dir(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / "checkpoints" / stage


def resume_path(run_dir: Path, stage: str) -> str | None:
    """``last.ckpt`` of a stage if an earlier, interrupted run left one."""
    last = checkpoint_dir(run_dir, stage) / "last.ckpt"
    return str(last) if last.is_file() else None


def make_logger(cfg: Config, run_dir: Path, stage: str):
    if cfg.trainer.logger == "wandb":
        if not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") != "online":
            os.environ["WANDB_MODE"] = "offline"
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        if wandb.run is not None:  # the previous stage's run: each stage logs to its own
            wandb.finish()
        return WandbLogger(project=f"dxai-{cfg.run.dataset}", name=f"{cfg.run.run_name}-{stage}",
                           group=cfg.run.run_name, save_dir=str(run_dir), job_type=stage,
                           id=f"{cfg.run.run_name}-{stage}", resume="allow")
    if cfg.trainer.logger == "csv":
        return CSVLogger(save_dir=str(run_dir), name="csv", version=stage)
    raise DXAIError(f"unknown logger {cfg.trainer.logger!r}; choose one of {LOGGERS}")


def parse_devices(devices: str):
    """'1' -> 1, '0,1' -> [0, 1], 'auto' -> 'auto'."""
    text = str(devices).strip()
    if text == "auto" or text == "-1":
        return text if text == "auto" else -1
    if "," in text:
        return [int(part) for part in text.split(",") if part.strip()]
    return int(text)


def make_trainer(cfg: Config, run_dir: Path, stage: str, max_steps: int, val_every_steps: int | None,
                 callbacks: list | None = None, monitor: str | None = None) -> pl.Trainer:
    """A Trainer for one stage with checkpointing (``last.ckpt`` + the best by ``monitor``)."""
    checkpoint = ModelCheckpoint(dirpath=checkpoint_dir(run_dir, stage), save_last=True, monitor=monitor,
                                 mode="max", save_top_k=1 if monitor else 0,
                                 every_n_train_steps=val_every_steps or max_steps)
    all_callbacks = [checkpoint, *(callbacks or [])]
    if cfg.trainer.progress_bar:
        all_callbacks.append(TQDMProgressBar(refresh_rate=10))
    logger = make_logger(cfg, run_dir, stage)
    if cfg.trainer.logger == "wandb":
        all_callbacks.append(LearningRateMonitor(logging_interval="step"))
    return pl.Trainer(
        accelerator=cfg.trainer.accelerator, devices=parse_devices(cfg.trainer.devices),
        num_nodes=cfg.trainer.num_nodes, strategy=cfg.trainer.strategy, precision=cfg.trainer.precision,
        max_steps=max_steps, max_epochs=-1, val_check_interval=val_every_steps,
        check_val_every_n_epoch=None if val_every_steps else 1, logger=logger, callbacks=all_callbacks,
        enable_progress_bar=cfg.trainer.progress_bar, log_every_n_steps=10, default_root_dir=str(run_dir),
        enable_model_summary=False, num_sanity_val_steps=0, deterministic=False,
    )


def log_image_panel(trainer: pl.Trainer, key: str, images: torch.Tensor, columns: list[str],
                    step_name: str = "step", step: int | None = None, caption: str = "") -> Path:
    """Log a titled grid of [0, 1] images (one column per title) to wandb, and save it as PNG in
    ``report/panels/`` named by ``step`` (default: the trainer's global step) after ``step_name``."""
    grid = titled_grid(images, columns)
    run_dir = Path(trainer.default_root_dir)
    step = trainer.global_step if step is None else step
    path = run_dir / "report" / "panels" / f"{key.replace('/', '_')}_{step_name}{step:06d}.png"
    if trainer.is_global_zero:
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
        if isinstance(trainer.logger, WandbLogger):
            trainer.logger.log_image(key=key, images=[grid], caption=[caption] if caption else None,
                                     step=trainer.global_step)
    return path
