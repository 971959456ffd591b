"""Progress of dxai's long loops, shown the same way everywhere: a bar on a terminal and a log line.

``Progress`` counts the steps of one loop (an optimisation, an evaluation, a training stage). On a
terminal it draws a tqdm bar; in every case it logs a line such as

    masks: reference 812/2000 steps, 4m01s elapsed, ETA 5m52s

at most every ``DXAI_PROGRESS_SECONDS`` seconds (default 20), so a run whose output goes to a file
(``make train > log``, a cluster job) or to ``<run>/train.log`` shows progress too. The log lines
carry ``record.dxai_progress = True``; the command line keeps them off a terminal that shows the bar.

The innermost running loop is ``current()``: the Ctrl-C message says where a run stopped with it.
In a process whose logging nobody set up (a spawned worker, such as the masks stage's background
reference), the lines still go to stderr and to the run's log file (``DXAI_LOG_FILE``, which the
pipeline sets for its workers).
"""

from __future__ import annotations

import logging
import os
import sys
import time

from tqdm.auto import tqdm

from dxai.interrupts import StageInterrupted

log = logging.getLogger("dxai.progress")
DEFAULT_SECONDS = 20.0
LOG_FILE_ENV = "DXAI_LOG_FILE"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_RUNNING: list[Progress] = []


def interval() -> float:
    """Seconds between two progress lines: ``DXAI_PROGRESS_SECONDS`` or 20."""
    try:
        return max(0.0, float(os.environ.get("DXAI_PROGRESS_SECONDS", DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


def duration(seconds: float) -> str:
    """3725 -> '1h02m', 241 -> '4m01s', 7.4 -> '7s'."""
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _reach_the_log(logger: logging.Logger) -> None:
    """Give ``logger`` handlers of its own (stderr, and ``$DXAI_LOG_FILE``) when no handler would see
    its records: a spawned worker process starts with logging unconfigured."""
    if logger.handlers or logging.getLogger().handlers:
        return
    console = logging.StreamHandler(sys.stderr)
    console.addFilter(HideProgressOnTerminal(sys.stderr))
    handlers: list[logging.Handler] = [console]
    if os.environ.get(LOG_FILE_ENV):
        try:
            handlers.append(logging.FileHandler(os.environ[LOG_FILE_ENV], encoding="utf-8"))
        except OSError:
            pass
    for handler in handlers:
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def current() -> Progress | None:
    """The innermost loop running now, if any."""
    return _RUNNING[-1] if _RUNNING else None


class Progress:
    """``total`` steps of a loop named ``description``: ``update()`` after each step (or ``set(done)``),
    ``close()`` at the end (or use it as a context manager). ``bar=False`` only logs (for a loop that
    has a bar of its own, such as a Lightning fit). ``done`` may start above 0 (a resumed loop); the
    time left is estimated from the steps done since this object was made."""

    def __init__(self, description: str, total: int, unit: str = "step", done: int = 0, bar: bool = True,
                 every: float | None = None, logger: logging.Logger | None = None):
        self.description, self.total, self.unit = description, int(total), unit
        self.done = self.start_done = int(done)
        self.every = interval() if every is None else every
        self.log = logger or log
        _reach_the_log(self.log)
        self.started = self.last_line = time.monotonic()
        self.lines = 0
        self.bar = tqdm(total=self.total, initial=self.done, desc=description, unit=unit, leave=False,
                        disable=None if bar else True, file=sys.stderr, dynamic_ncols=True)
        self.closed = False
        _RUNNING.append(self)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close()
        if isinstance(error, KeyboardInterrupt):  # dxai's SIGINT handler not installed: say where, too
            error = StageInterrupted()
        if isinstance(error, StageInterrupted):  # the innermost loop says where the run stopped
            raise error.fill(step=self.done, total=self.total, task=self.description.rstrip(":")) from None

    def update(self, steps: int = 1, **postfix) -> None:
        self.set(self.done + steps, **postfix)

    def set(self, done: int, **postfix) -> None:
        done = int(done)
        if done != self.done:
            self.bar.update(done - self.done)
            self.done = done
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.postfix = postfix or getattr(self, "postfix", {})
        now = time.monotonic()
        if now - self.last_line >= self.every:
            self.last_line = now
            self.log.info("%s", self.line(now), extra={"dxai_progress": True})
            self.lines += 1

    def line(self, now: float | None = None) -> str:
        """'<description> N/M <unit>s, <elapsed> elapsed, ETA <left>'."""
        now = time.monotonic() if now is None else now
        elapsed = now - self.started
        steps = self.done - self.start_done
        left = "?" if steps <= 0 else duration(elapsed / steps * max(self.total - self.done, 0))
        extra = "".join(f", {key} {value}" for key, value in getattr(self, "postfix", {}).items())
        return (f"{self.description} {self.done}/{self.total} {self.unit}s, {duration(elapsed)} elapsed, "
                f"ETA {left}{extra}")

    def close(self) -> None:
        """End the loop; a loop that logged progress lines also logs the time it took."""
        if self.closed:
            return
        self.closed = True
        self.bar.close()
        if self in _RUNNING:
            _RUNNING.remove(self)
        if self.lines:
            self.log.info("%s %d/%d %ss in %s", self.description.rstrip(":") + ":", self.done, self.total, self.unit,
                          duration(time.monotonic() - self.started), extra={"dxai_progress": True})


class HideProgressOnTerminal(logging.Filter):
    """For a console handler: drop the progress lines when the stream is a terminal (its bar shows them)."""

    def __init__(self, stream=None):
        super().__init__()
        self.stream = stream if stream is not None else sys.stderr

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "dxai_progress", False):
            return True
        try:
            return not self.stream.isatty()
        except (AttributeError, ValueError):
            return True
