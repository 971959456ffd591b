"""What every training stage shares: the Trainer, its logger, checkpoints and image panels.

A stage's checkpoints live in ``<run>/checkpoints/<stage>/`` with ``last.ckpt`` for resuming; they
are written atomically (``AtomicCheckpointIO``), so a kill or a full disk leaves the previous one whole.
Loggers: wandb (online when logged in, offline otherwise; it never waits for a login; the stages
of one run form one wandb group) or CSV. Image panels are saved as PNG under ``<run>/report/panels/``
either way.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.plugins import TorchCheckpointIO

from dxai.config import Config
from dxai.errors import DXAIError
from dxai.io import atomic_write
from dxai.panels import titled_grid
from dxai.run_folder import checkpoint_dir

log = logging.getLogger(__name__)
LOGGERS = ("csv", "wandb")


def wandb_logged_in() -> bool:
    """Whether wandb has credentials without asking: an API key in the environment or in ~/.netrc
    (where ``wandb login`` stores it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def config_dict(cfg: Config) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def make_logger(cfg: Config, run_dir: Path, stage: str):
    """The stage's logger, with the resolved configuration logged. wandb goes online when the user
    is logged in and offline otherwise (``WANDB_MODE`` set by the user wins); it never prompts."""
    if cfg.trainer.logger == "wandb":
        if "WANDB_MODE" not in os.environ and not wandb_logged_in():
            os.environ["WANDB_MODE"] = "offline"
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        if wandb.run is not None:  # the previous stage's run: each stage logs to its own
            wandb.finish()
        logger = WandbLogger(project=f"dxai-{cfg.run.dataset}", name=f"{cfg.run.run_name}-{stage}",
                             group=cfg.run.run_name, save_dir=str(run_dir), job_type=stage,
                             id=f"{cfg.run.run_name}-{stage}", resume="allow")
    elif cfg.trainer.logger == "csv":
        logger = CSVLogger(save_dir=str(run_dir), name="csv", version=stage)
    else:
        raise DXAIError(f"unknown logger {cfg.trainer.logger!r}; choose one of {LOGGERS}")
    logger.log_hyperparams(config_dict(cfg))
    return logger


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoints, written the way dxai writes every file: a temporary file beside
    the target, fsynced, given the umask's permissions and renamed into place. Lightning's own writer
    overwrites ``last.ckpt`` in place, so a full disk or a kill left it truncated."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_write(Path(path), lambda handle: torch.save(checkpoint, handle))

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None):
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except (DXAIError, FileNotFoundError):
            raise
        except Exception as error:  # truncated zip, bad pickle, random bytes: say which file and what to do
            raise DXAIError(f"{path} is not a readable checkpoint ({str(error).splitlines()[0]}); move it aside "
                            f"(e.g. to {Path(path).name}.corrupt) to run its stage again from the start") from None


class StageProgressBar(TQDMProgressBar):
    """Lightning's bar without the logger's version field (it would show the stage name cut short)."""

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class FrozenClassifier:
    """For a LightningModule with a frozen ``self.classifier``: it stays in eval mode when the module
    trains, and checkpoints leave it out (the stage supplies it again on resume)."""

    def train(self, mode: bool = True):
        super().train(mode)
        self.classifier.eval()
        return self

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("classifier.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"].update({f"classifier.{k}": v for k, v in self.classifier.state_dict().items()})


def parse_devices(devices: str):
    """'1' -> 1, '0,1' -> [0, 1], 'auto' -> 'auto'."""
    text = str(devices).strip()
    if text == "auto" or text == "-1":
        return text if text == "auto" else -1
    if "," in text:
        return [int(part) for part in text.split(",") if part.strip()]
    return int(text)


def make_trainer(cfg: Config, run_dir: Path, stage: str, max_steps: int, val_every_steps: int | None) -> pl.Trainer:
    """A Trainer for one stage that keeps ``last.ckpt`` for resuming."""
    checkpoint = ModelCheckpoint(dirpath=checkpoint_dir(run_dir, stage), save_last=True, save_top_k=0,
                                 every_n_train_steps=val_every_steps or max_steps)
    all_callbacks = [checkpoint]
    if cfg.trainer.progress_bar:
        all_callbacks.append(StageProgressBar(refresh_rate=10))
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
        plugins=[AtomicCheckpointIO()],
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
