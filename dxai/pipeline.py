"""A dxai run: the stages of ``dxai.stages`` in order, each resumable and skipped when its result exists."""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import time
from pathlib import Path

import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from dxai import progress
from dxai.config import Config, read_config, save_config, validate
from dxai.errors import DXAIError
from dxai.interrupts import StageInterrupted
from dxai.io import TMP_SUFFIX, update_metrics
from dxai.run_folder import bundle_dir
from dxai.stages import STAGES

log = logging.getLogger(__name__)

def stage_module(name: str):
    if name not in STAGES:
        raise DXAIError(f"unknown stage {name!r}; choose one of {['all', *STAGES]}")
    return importlib.import_module(STAGES[name])


# Settings that shape the data or the networks: a run folder's checkpoints only fit these.
SHAPING_KEYS = ("data.kind", "data.family", "data.num_classes", "data.img_size", "data.img_channels",
                "classifier.arch", "decomposition.num_branches", "decomposition.base_channels",
                "decomposition.max_channels", "decomposition.num_downsample", "decomposition.num_bottleneck",
                "decomposition.encoder_blocks", "decomposition.skip",
                "decomposition.style_dim", "decomposition.style_per_block", "decomposition.latent_dim",
                "decomposition.mapping_hidden", "decomposition.disc_base_channels",
                "decomposition.disc_max_channels", "cartoonx.levels", "cartoonx.wavelet", "cartoonx.mode",
                "masks.base_channels", "masks.max_channels")


def _value(cfg: Config, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name, None)


def _same_root(saved: str | None, root: str | None) -> bool:
    if saved is None or root is None:
        return saved == root
    return os.path.abspath(os.path.expanduser(saved)) == os.path.abspath(os.path.expanduser(root))


def check_same_shape(cfg: Config, run_dir: Path) -> None:
    """Refuse to continue a run folder whose checkpoints were made with other network or data shapes,
    or on another data folder."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = read_config(saved_path)
    changed = [f"{key}: {_value(saved, key)} -> {_value(cfg, key)}" for key in SHAPING_KEYS
               if _value(saved, key) != _value(cfg, key)]
    if changed:
        raise DXAIError(f"{run_dir} was trained with other settings ({'; '.join(changed)}); its checkpoints do "
                        "not fit them. Use a new --run-name, or the settings of that run")
    if not _same_root(saved.data.root, cfg.data.root):
        raise DXAIError(f"{run_dir} was trained on the data in {saved.data.root}, not {cfg.data.root}; its "
                        f"classifier and checkpoints belong to that data. Use a new --run-name for {cfg.data.root}, "
                        f"or --data-root {saved.data.root} to continue this run")


def clean_leftovers(run_dir: Path) -> list[Path]:
    """Remove what a killed run left in ``run_dir``: temporary files of atomic writes (``.*.tmp``) and
    export staging folders (``.model-*``). If a kill came between the export's two renames, the
    previous bundle (``.model-old-*``) is put back as ``model/``. Returns what was removed."""
    removed: list[Path] = []
    bundle = bundle_dir(run_dir)
    for old in sorted(run_dir.glob(".model-old-*")):
        if not bundle.exists() and (old / "model.json").is_file():
            old.rename(bundle)
            log.info("restored %s from %s, left by an interrupted export", bundle, old.name)
    for staging in sorted(run_dir.glob(".model-*")):
        if staging.is_dir() and not staging.is_symlink():
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
    for tmp in sorted(run_dir.rglob(f".*{TMP_SUFFIX}")):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    if removed:
        log.info("removed %d file(s) and folder(s) an interrupted run left in %s", len(removed), run_dir)
    return removed


LOG_FILE = "train.log"
_log_files: list[logging.Handler] = []


def add_log_file(run_dir: Path) -> logging.Handler | None:
    """Append every log record (dxai's, Lightning's, the progress lines) to ``<run>/train.log`` (rank 0)."""
    if rank_zero_only.rank != 0:
        return None
    path = (run_dir / LOG_FILE).resolve()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path:
            return handler
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    _log_files.append(handler)
    os.environ[progress.LOG_FILE_ENV] = str(path)  # worker processes' progress lines (dxai.progress)
    return handler


def remove_log_file() -> None:
    """Detach and close the log files ``add_log_file`` attached (the command line does, at its end)."""
    os.environ.pop(progress.LOG_FILE_ENV, None)
    while _log_files:
        handler = _log_files.pop()
        logging.getLogger().removeHandler(handler)
        handler.close()


def _run_stage(module, name: str, cfg: Config, run_dir: Path):
    """``module.run``; a Ctrl-C leaves it as ``StageInterrupted`` naming the stage (and the loop running)."""
    try:
        return module.run(cfg, run_dir)
    except (StageInterrupted, KeyboardInterrupt) as error:
        stop = error if isinstance(error, StageInterrupted) else StageInterrupted()
        running = progress.current()
        if running is not None:
            stop.fill(step=running.done, total=running.total, task=running.description.rstrip(":"))
        raise stop.fill(name) from None


def start_early_work(names: list[str], cfg: Config, run_dir: Path) -> None:
    """Let the stages ``names`` start, in background processes, the work that needs only what earlier
    stages made (a stage module's optional ``start_early``), so that it runs beside the next stage."""
    if rank_zero_only.rank != 0:
        return
    for name in names:
        start = getattr(stage_module(name), "start_early", None)
        if start is not None:
            start(cfg, run_dir)


def run_pipeline(cfg: Config, stage: str = "all", log_file: bool = False) -> Path:
    """Run one stage (always) or all of them (skipping those already done); return the run folder.
    ``log_file``: also write the log to ``<run>/train.log``."""
    if stage != "all":
        stage_module(stage)  # an unknown stage is refused before any work
    validate(cfg, stage)
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if log_file:
        add_log_file(run_dir)
    check_same_shape(cfg, run_dir)
    if rank_zero_only.rank == 0:  # the other ranks start at the same time: one writer, one cleaner
        clean_leftovers(run_dir)
        save_config(cfg, run_dir / "config.yaml")
    if cfg.trainer.cpu_threads:
        torch.set_num_threads(cfg.trainer.cpu_threads)
    names = list(STAGES) if stage == "all" else [stage]
    for name in names:
        module = stage_module(name)
        if getattr(module, "RANK_ZERO_ONLY", False) and rank_zero_only.rank != 0:
            continue
        if stage == "all" and module.is_done(cfg, run_dir):
            log.info("stage %s: already done in %s, skipped", name, run_dir)
            continue
        start_early_work(names[names.index(name):], cfg, run_dir)
        log.info("stage %s: starting", name)
        started = time.perf_counter()
        results = _run_stage(module, name, cfg, run_dir)
        seconds = round(time.perf_counter() - started, 1)
        if rank_zero_only.rank == 0:
            update_metrics(run_dir, "seconds", {name: seconds})
        log.info("stage %s (%.0f s): %s", name, seconds, results)
    return run_dir
