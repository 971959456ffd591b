"""What every training stage shares: the Trainer, its logger, checkpoints and image panels.

A stage's checkpoints live in ``<run>/checkpoints/<stage>/`` with ``last.ckpt`` for resuming; they
are written atomically (``AtomicCheckpointIO``), so a kill or a full disk leaves the previous one whole.
Loggers: wandb (online when logged in and its server answers, offline otherwise; it never waits for
a login nor for an unreachable server; the stages of one run form one wandb group) or CSV. Image
panels are saved as PNG under ``<run>/report/panels/`` either way.
"""

from __future__ import annotations

import logging
import netrc
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.plugins import TorchCheckpointIO
from torch import nn

from dxai import interrupts
from dxai.config import Config, TrainerConfig
from dxai.errors import DXAIError
from dxai.interrupts import StageInterrupted
from dxai.io import atomic_write
from dxai.panels import titled_grid
from dxai.progress import Progress
from dxai.run_folder import checkpoint_dir

log = logging.getLogger(__name__)
LOGGERS = ("csv", "wandb")
WANDB_DEFAULT_URL = "https://api.wandb.ai"
WANDB_CHECK_SECONDS = 3.0   # the reachability check before going online
WANDB_INIT_SECONDS = 30.0   # wandb's own init_timeout, should the server stop answering after the check


def wandb_logged_in() -> bool:
    """Whether wandb has credentials without asking: an API key in the environment or in ~/.netrc
    (where ``wandb login`` stores it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", WANDB_DEFAULT_URL)).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def config_dict(cfg: Config) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def wandb_reachable(url: str | None = None, timeout: float = WANDB_CHECK_SECONDS) -> bool:
    """Whether the wandb server (``WANDB_BASE_URL``, default api.wandb.ai) answers an HTTP HEAD within
    ``timeout`` seconds. Any HTTP answer counts (even 401 or 404); a refused connection, a timeout, a
    name that does not resolve or a TLS failure does not. Proxies in the environment are used."""
    url = url or os.environ.get("WANDB_BASE_URL", WANDB_DEFAULT_URL)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # URLError, socket.timeout, ConnectionRefusedError, ssl errors; a bad URL
        return False


def _go_offline(run_dir: Path, reason: str) -> None:
    os.environ["WANDB_MODE"] = "offline"  # also for the later stages of this run: one warning per run
    log.warning("wandb server %s: logging offline to %s; upload later with wandb sync %s", reason,
                run_dir / "wandb", run_dir / "wandb" / "offline-run-*")


def _wandb_logger(cfg: Config, run_dir: Path, stage: str) -> WandbLogger:
    import wandb

    if wandb.run is not None:  # the previous stage's run: each stage logs to its own
        wandb.finish()
    logger = WandbLogger(project=f"dxai-{cfg.run.dataset}", name=f"{cfg.run.run_name}-{stage}",
                         group=cfg.run.run_name, save_dir=str(run_dir), job_type=stage,
                         id=f"{cfg.run.run_name}-{stage}", resume="allow",
                         settings=wandb.Settings(init_timeout=WANDB_INIT_SECONDS))
    init = getattr(logger, "_wandb_init", {})
    if init.get("anonymous", False) is None:  # Lightning passes anonymous=None; wandb warns it is deprecated
        del init["anonymous"]
    return logger


def make_wandb_logger(cfg: Config, run_dir: Path, stage: str) -> WandbLogger:
    """wandb online when the user is logged in and the server answers, offline otherwise
    (``WANDB_MODE`` set by the user wins). It never prompts, and an unreachable server (no internet on
    a cluster node, a firewall) costs a few seconds and one warning, never the stage."""
    if "WANDB_MODE" not in os.environ:
        if not wandb_logged_in():
            os.environ["WANDB_MODE"] = "offline"
        elif not wandb_reachable():
            url = os.environ.get("WANDB_BASE_URL", WANDB_DEFAULT_URL)
            _go_offline(run_dir, f"unreachable ({url})")
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    logger = _wandb_logger(cfg, run_dir, stage)
    if os.environ.get("WANDB_MODE") in ("offline", "dryrun", "disabled"):
        return logger
    try:
        logger.experiment  # noqa: B018 - wandb.init: fails here if the server stops answering
    except (wandb.errors.CommError, wandb.errors.UsageError, wandb.errors.Error, TimeoutError) as error:
        if wandb.run is not None:
            wandb.finish(exit_code=1)
        _go_offline(run_dir, f"unreachable ({str(error).splitlines()[0] if str(error) else type(error).__name__})")
        logger = _wandb_logger(cfg, run_dir, stage)
    return logger


def make_logger(cfg: Config, run_dir: Path, stage: str):
    """The stage's logger, with the resolved configuration logged (wandb: see ``make_wandb_logger``)."""
    if cfg.trainer.logger == "wandb":
        logger = make_wandb_logger(cfg, run_dir, stage)
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


def ema_beta(beta: float, iteration: int) -> float:
    """``beta``, warmed up as min(beta, (1 + t) / (10 + t)) so that short runs get a useful EMA
    (after 1000 iterations 0.991; 0.999 from 9000 on)."""
    return min(beta, (1 + iteration) / (10 + iteration))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    for ema_param, param in zip(ema.parameters(), model.parameters()):
        ema_param.lerp_(param.detach(), 1 - beta)


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


class LoggedProgress(Callback):
    """A fit's progress as log lines ("stage classifier: step 120/600 steps, ..., ETA 1m20s") at most every
    ``DXAI_PROGRESS_SECONDS`` (20 s): Lightning's bar draws on the terminal only, this reaches the log.
    Steps are batches: for a stage with several optimiser steps per batch (the decomposition's
    iterations), ``steps_per_batch`` converts Lightning's global step."""

    def __init__(self, stage: str, steps_per_batch: int = 1):
        self.stage, self.steps_per_batch = stage, steps_per_batch
        self.progress: Progress | None = None

    def step_of(self, trainer: pl.Trainer) -> tuple[int, int]:
        return trainer.global_step // self.steps_per_batch, max(trainer.max_steps, 0) // self.steps_per_batch

    def on_train_start(self, trainer, pl_module) -> None:
        step, total = self.step_of(trainer)
        if step:
            log.info("stage %s: resumed from last.ckpt at step %d of %d", self.stage, step, total)
        if trainer.is_global_zero:
            self.progress = Progress(f"stage {self.stage}:", total, done=step, bar=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.progress is not None:
            self.progress.set(self.step_of(trainer)[0])

    def _close(self) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None

    def on_train_end(self, trainer, pl_module) -> None:
        self._close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._close()


class StopAtStepEnd(Callback):
    """A Ctrl-C during a single-process fit ends the running step, saves ``last.ckpt`` at it (atomically)
    and stops the fit with ``StageInterrupted`` (see ``dxai.interrupts``): a resumed run starts at that
    very step. Under several processes a Ctrl-C stops at once and the run resumes from the last
    periodic checkpoint."""

    def __init__(self, stage: str, last_path: Path, steps_per_batch: int = 1):
        self.stage, self.last_path, self.steps_per_batch = stage, Path(last_path), steps_per_batch
        self._deferred = None

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.world_size == 1 and interrupts.installed():
            self._deferred = interrupts.deferred()
            self._deferred.__enter__()

    def _leave(self) -> None:
        if self._deferred is not None:
            self._deferred.__exit__(None, None, None)
            self._deferred = None

    def _stop_if_asked(self, trainer) -> None:
        if self._deferred is not None and interrupts.requested():
            trainer.save_checkpoint(self.last_path, weights_only=False)
            self._leave()
            raise StageInterrupted(self.stage, trainer.global_step // self.steps_per_batch,
                                   trainer.max_steps // self.steps_per_batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._stop_if_asked(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop_if_asked(trainer)  # a Ctrl-C after the last step's end is not lost either
        self._leave()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._leave()


class StageTrainer(pl.Trainer):
    """Lightning's Trainer for one dxai stage: a Ctrl-C in ``fit`` or ``validate`` leaves it as
    ``StageInterrupted`` with the stage, step and total filled in (Lightning's own handling of a
    KeyboardInterrupt, when dxai's SIGINT handler is not installed, ends in ``sys.exit(1)``)."""

    def __init__(self, *args, dxai_stage: str = "", steps_per_batch: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.dxai_stage, self.steps_per_batch = dxai_stage, steps_per_batch

    def _interrupted(self) -> StageInterrupted:
        return StageInterrupted(self.dxai_stage, self.global_step // self.steps_per_batch,
                                max(self.max_steps, 0) // self.steps_per_batch)

    def _run_interruptible(self, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except StageInterrupted as stop:
            raise stop.fill(self.dxai_stage, self.global_step // self.steps_per_batch,
                            max(self.max_steps, 0) // self.steps_per_batch) from None
        except KeyboardInterrupt:
            raise self._interrupted() from None
        except SystemExit:
            if self.interrupted:  # Lightning caught a KeyboardInterrupt and called sys.exit(1)
                raise self._interrupted() from None
            raise

    def fit(self, *args, **kwargs):
        return self._run_interruptible(super().fit, *args, **kwargs)

    def validate(self, *args, **kwargs):
        return self._run_interruptible(super().validate, *args, **kwargs)



def process_count(trainer: TrainerConfig) -> int:
    """How many training processes the Trainer settings make (devices x nodes)."""
    devices = parse_devices(trainer.devices)
    if isinstance(devices, list):
        count = len(devices)
    elif isinstance(devices, int) and devices > 0:
        count = devices
    else:
        uses_gpu = trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        count = torch.cuda.device_count() if uses_gpu else 1
    return count * trainer.num_nodes


def single_cpu_process(trainer: TrainerConfig) -> bool:
    """Whether the Trainer settings make one process on a CPU."""
    on_cpu = trainer.accelerator == "cpu" or (trainer.accelerator == "auto" and not torch.cuda.is_available())
    return on_cpu and process_count(trainer) == 1

def make_trainer(cfg: Config, run_dir: Path, stage: str, max_steps: int, val_every_steps: int | None,
                 steps_per_batch: int = 1) -> pl.Trainer:
    """A Trainer for one stage that keeps ``last.ckpt`` for resuming, logs its progress and stops
    cleanly on Ctrl-C. ``steps_per_batch``: optimiser steps per batch (progress and messages count batches)."""
    checkpoint = ModelCheckpoint(dirpath=checkpoint_dir(run_dir, stage), save_last=True, save_top_k=0,
                                 every_n_train_steps=val_every_steps or max_steps)
    all_callbacks = [checkpoint, LoggedProgress(stage, steps_per_batch),
                     StopAtStepEnd(stage, checkpoint_dir(run_dir, stage) / "last.ckpt", steps_per_batch)]
    if cfg.trainer.progress_bar:
        all_callbacks.append(StageProgressBar(refresh_rate=10))
    logger = make_logger(cfg, run_dir, stage)
    if cfg.trainer.logger == "wandb":
        all_callbacks.append(LearningRateMonitor(logging_interval="step"))
    limit_val = cfg.trainer.limit_val_batches
    return StageTrainer(
        accelerator=cfg.trainer.accelerator, devices=parse_devices(cfg.trainer.devices),
        num_nodes=cfg.trainer.num_nodes, strategy=cfg.trainer.strategy, precision=cfg.trainer.precision,
        max_steps=max_steps, max_epochs=-1, val_check_interval=val_every_steps,
        check_val_every_n_epoch=None if val_every_steps else 1, logger=logger, callbacks=all_callbacks,
        enable_progress_bar=cfg.trainer.progress_bar, log_every_n_steps=10, default_root_dir=str(run_dir),
        enable_model_summary=False, num_sanity_val_steps=0, deterministic=False,
        limit_val_batches=1.0 if limit_val is None else limit_val,
        plugins=[AtomicCheckpointIO()], dxai_stage=stage, steps_per_batch=steps_per_batch,
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
