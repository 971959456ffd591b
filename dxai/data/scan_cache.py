"""The folder scan's verdicts, cached, so that opening a data set again decodes only what changed.

``FolderDataset`` decodes every file when it opens, to skip broken ones before training. The
files found readable are remembered by path (relative to the split folder), size and
modification time (ns) in a small JSON file: ``ROOT/.dxai-scan-<split>.json`` when the data root
is writable, else ``~/.cache/dxai/scan-<hash of ROOT>-<split>.json`` (``$XDG_CACHE_HOME`` is
honoured). Every stage, every rank and every re-run then re-verifies only new or changed files.
Unreadable files are not remembered: they are checked again at every open (they are few, fail
fast, and a transient read error must not stick).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from dxai.io import atomic_write_text

log = logging.getLogger(__name__)

SCAN_FORMAT = "dxai-scan"
SCAN_VERSION = 1


def home_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dxai"


def cache_paths(root: Path, split: str) -> list[Path]:
    """Where the cache of ``root``'s ``split`` lives, in order of preference."""
    digest = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return [Path(root) / f".dxai-scan-{split}.json", home_cache_dir() / f"scan-{digest}-{split}.json"]


def _read(path: Path) -> dict[str, list[int]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, UnicodeDecodeError) as error:
        log.debug("ignoring the scan cache %s: %s", path, error)
        return {}
    if not (isinstance(data, dict) and data.get("format") == SCAN_FORMAT and data.get("version") == SCAN_VERSION
            and isinstance(data.get("files"), dict)):
        return {}
    return {name: entry for name, entry in data["files"].items()
            if isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, int) for v in entry)}


class ScanCache:
    """The readable verdicts of one split: ``verdict(path, verify)`` returns None for a readable
    file (from the cache when its size and mtime match, else from ``verify``) or the reason it is
    not; ``save()`` writes the verdicts of this scan when they differ from those read."""

    def __init__(self, root: Path, split: str):
        self.split_dir = Path(root) / split
        self.paths = cache_paths(Path(root), split)
        self.stored = [_read(path) for path in self.paths]
        self.known: dict[str, list[int]] = {}
        for entries in reversed(self.stored):  # the preferred file wins
            self.known.update(entries)
        self.seen: dict[str, list[int]] = {}
        self.verified = 0  # files decoded by this scan

    def verdict(self, path: Path, verify: Callable[[Path], str | None]) -> str | None:
        name = path.relative_to(self.split_dir).as_posix()
        try:
            stat = path.stat()
        except OSError as error:
            return f"{type(error).__name__}: {error}"
        key = [stat.st_size, stat.st_mtime_ns]
        if self.known.get(name) == key:
            self.seen[name] = key
            return None
        self.verified += 1
        reason = verify(path)
        if reason is None:
            self.seen[name] = key
        return reason

    def save(self) -> Path | None:
        """Write the cache (the first writable place); None when nothing changed or nowhere is writable."""
        if any(self.seen == entries for entries in self.stored):
            return None
        text = json.dumps({"format": SCAN_FORMAT, "version": SCAN_VERSION, "split": str(self.split_dir.resolve()),
                           "files": self.seen}, separators=(",", ":"))
        for path in self.paths:
            try:
                atomic_write_text(path, text)
            except OSError as error:
                log.debug("cannot write the scan cache %s: %s", path, error)
                continue
            return path
        log.info("the folder scan of %s cannot be cached (%s not writable)", self.split_dir,
                 " nor ".join(str(p) for p in self.paths))
        return None
