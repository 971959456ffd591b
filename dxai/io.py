"""Atomic file writes and the run's metrics.json, so an interrupted run never leaves half a file.

Every file dxai writes goes to a temporary file beside its target (``.<name>.<random>.tmp``),
is flushed and fsynced, given the permissions the umask asks for (not mkstemp's 0600) and then
renamed into place: a kill or a full disk leaves the old file whole and at worst a temporary one,
which the next run removes (``dxai.pipeline``).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from dxai.errors import DXAIError

TMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` would give a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode ``mkdir()`` would give a new folder: 0777 less the umask."""
    return 0o777 & ~current_umask()


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through ``write(handle)`` into a temporary file, fsync it, give it the
    umask's permissions and rename it into place; on any failure the temporary file is removed
    and an existing ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), file_mode())
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        if error.filename is None:  # a failed write (ENOSPC) names no file: name the one being written
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def os_error_sentence(error: OSError) -> str:
    """One sentence for a failed file operation: the file, what went wrong and what to do."""
    where = error.filename or "a file"
    if error.filename2:
        where = f"{where} -> {error.filename2}"
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = ("free some space and run the same command again: files already written are whole, and an "
               "interrupted stage resumes from its last checkpoint")
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a folder you can write to (e.g. --runs-dir or --out), or fix its permissions"
    else:
        fix = "check the path and run again"
    return f"cannot use {where}: {reason}; {fix}"


def metrics_path(run_dir: Path) -> Path:
    return Path(run_dir) / "report" / "metrics.json"


def read_metrics(run_dir: Path) -> dict[str, Any]:
    path = metrics_path(run_dir)
    if not path.is_file():
        return {}
    try:
        metrics = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise DXAIError(f"{path} is not valid JSON ({error}); move it aside (e.g. to {path.name}.corrupt) and run "
                        "again: the stages whose results it recorded then run again") from None
    if not isinstance(metrics, dict):
        raise DXAIError(f"{path} holds a JSON {type(metrics).__name__}, not the object dxai writes; move it aside "
                        f"(e.g. to {path.name}.corrupt) and run again: the stages it recorded then run again")
    return metrics


def update_metrics(run_dir: Path, section: str, values: dict[str, Any]) -> dict[str, Any]:
    """Merge ``values`` into ``metrics.json[section]`` (one JSON object, nested by stage)."""
    metrics = read_metrics(run_dir)
    metrics.setdefault(section, {}).update(values)
    atomic_write_text(metrics_path(run_dir), json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
