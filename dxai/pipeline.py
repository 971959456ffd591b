"""The stages of a dxai run, in order. Each is resumable and skipped when its result exists.

A stage is a module with ``run(cfg, run_dir) -> dict`` and ``is_done(cfg, run_dir) -> bool``.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from dxai.config import Config, save_config
from dxai.errors import DXAIError

log = logging.getLogger(__name__)

STAGES: dict[str, str] = {
    "classifier": "dxai.training.classifier",
}


def stage_module(name: str):
    if name not in STAGES:
        raise DXAIError(f"unknown stage {name!r}; choose one of {['all', *STAGES]}")
    return importlib.import_module(STAGES[name])


def run_pipeline(cfg: Config, stage: str = "all") -> Path:
    """Run one stage (always) or all of them (skipping those already done); return the run folder."""
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    names = list(STAGES) if stage == "all" else [stage]
    for name in names:
        module = stage_module(name)
        if stage == "all" and module.is_done(cfg, run_dir):
            log.info("stage %s: already done in %s, skipped", name, run_dir)
            continue
        log.info("stage %s: starting", name)
        results = module.run(cfg, run_dir)
        log.info("stage %s: %s", name, results)
    return run_dir
