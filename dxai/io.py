"""Atomic file writes and the run's metrics.json, so an interrupted run never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def metrics_path(run_dir: Path) -> Path:
    return Path(run_dir) / "report" / "metrics.json"


def read_metrics(run_dir: Path) -> dict[str, Any]:
    path = metrics_path(run_dir)
    return json.loads(path.read_text()) if path.is_file() else {}


def update_metrics(run_dir: Path, section: str, values: dict[str, Any]) -> dict[str, Any]:
    """Merge ``values`` into ``metrics.json[section]`` (one JSON object, nested by stage)."""
    metrics = read_metrics(run_dir)
    metrics.setdefault(section, {}).update(values)
    atomic_write_text(metrics_path(run_dir), json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
