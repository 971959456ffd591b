"""Ctrl-C during a run: one sentence saying what was kept, exit code 130, and a second Ctrl-C stops at once.

``install()`` (the command line calls it) replaces Python's SIGINT handler:

- the first Ctrl-C raises ``StageInterrupted`` where the run is, except inside ``deferred()``, where it
  only sets ``requested()``: a Lightning fit uses that to finish the running step, save ``last.ckpt``
  at it and stop there (``dxai.training.common.StopAtStepEnd``);
- a second Ctrl-C exits at once (``os._exit(130)``). Checkpoints are written atomically (a temporary
  file renamed into place), so even then ``last.ckpt`` is the previous whole one, and the temporary
  file left behind is removed at the next start.

``StageInterrupted`` derives from ``BaseException`` (like ``KeyboardInterrupt``), so no ``except
Exception`` swallows it, and Lightning tears its Trainer down and re-raises it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C'd command


class StageInterrupted(BaseException):  # noqa: N818 - it reads as what happened, like KeyboardInterrupt
    """A Ctrl-C: where it stopped (stage, step of total, the loop), filled in as it travels up."""

    def __init__(self, stage: str | None = None, step: int | None = None, total: int | None = None,
                 task: str | None = None):
        super().__init__(stage, step, total, task)
        self.stage, self.step, self.total, self.task = stage, step, total, task

    def fill(self, stage: str | None = None, step: int | None = None, total: int | None = None,
             task: str | None = None) -> StageInterrupted:
        """Set what is not known yet."""
        self.stage = self.stage or stage
        if self.step is None and step is not None:
            self.step, self.total, self.task = step, total, self.task or task
        return self

    def sentence(self) -> str:
        stage = f"the {self.stage} stage" if self.stage else "the run"
        task = f" ({self.task})" if self.task else ""
        where = (f"at step {self.step} of {self.total} of {stage}{task}" if self.step is not None
                 else f"during {stage}")
        return f"interrupted {where}; the same command resumes"

    def __str__(self) -> str:
        return self.sentence()


_state = {"count": 0, "deferred": 0, "installed": False}


def _handler(signum, frame) -> None:
    _state["count"] += 1
    if _state["count"] > 1:
        sys.stderr.write("\nsecond Ctrl-C: stopped at once; the last checkpoint is whole (written atomically) "
                         "and the same command resumes from it\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)
    if _state["deferred"]:
        sys.stderr.write("\nCtrl-C: stopping after the current step, which is saved (Ctrl-C again to stop "
                         "at once)\n")
        sys.stderr.flush()
        return
    raise StageInterrupted()


def install():
    """Handle SIGINT as described above (main thread only). Returns the handler it replaced, for
    ``restore`` (None when nothing was installed)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.signal(signal.SIGINT, _handler)
    _state.update(count=0, deferred=0, installed=True)
    return previous


def restore(previous) -> None:
    """Put back the SIGINT handler that ``install`` replaced (a caller such as a test keeps its own)."""
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, previous)
        _state.update(installed=False)


def installed() -> bool:
    return _state["installed"] and signal.getsignal(signal.SIGINT) is _handler


def requested() -> bool:
    """Whether a Ctrl-C arrived that a ``deferred()`` block has not acted on yet."""
    return _state["count"] > 0


@contextmanager
def deferred():
    """Within this block, the first Ctrl-C only sets ``requested()`` (when ``install()`` was called;
    otherwise Ctrl-C keeps Python's behaviour)."""
    _state["deferred"] += 1
    try:
        yield
    finally:
        _state["deferred"] -= 1
