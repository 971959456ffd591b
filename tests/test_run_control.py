"""Watching and stopping a run as a user would (issue 25): override errors in one sentence, progress
lines, Ctrl-C (exit 130, the step saved, the rerun resumes), wandb with an unreachable server, and a
log without the dependencies' noise."""

from __future__ import annotations

import http.server
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from dxai import _quiet, interrupts
from dxai.config import ConfigError, closest_key, edit_distance, load_config
from dxai.interrupts import StageInterrupted
from dxai.progress import HideProgressOnTerminal, Progress, duration

ROOT = Path(__file__).resolve().parent.parent
TINY_CLASSIFIER = ["--smoke", "--stage", "classifier", "--classifier", "simple", "classifier.independent=0",
                   "trainer.progress_bar=false", "trainer.accelerator=cpu", "trainer.cpu_threads=1"]


# --- override errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("override, expected", [
    ("trainer.nonexistent_key=3", "unknown setting 'trainer.nonexistent_key'"),
    ("decomposition.lambda_rec=abc", "'abc'"),
    ("decomposition.lamda_rec=3", "did you mean decomposition.lambda_rec?"),
    ("trainer.lambda_rec=3", "did you mean decomposition.lambda_rec?"),
    ("decompositon.lr=1e-4", "did you mean decomposition.lr?"),
    ("nosection.x=1", "the sections are run, data"),
    ("trainer=3", "trainer is a section"),
    ("lambda_rec", "must be KEY=VALUE"),
])
def test_a_bad_override_is_one_sentence(override, expected):
    with pytest.raises(ConfigError) as caught:
        load_config("synthetic", [override])
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    for internal in ("full_key", "reference_type", "object_type"):
        assert internal not in message


def test_closest_key_only_when_near():
    assert edit_distance("lamda_rec", "lambda_rec") == 1
    assert closest_key("classifier.max_stpes") == "classifier.max_steps"
    assert closest_key("trainer.nonexistent_key") is None


def test_good_overrides_still_apply():
    cfg = load_config("synthetic", ["decomposition.lambda_rec=8", "data.class_names=[a,b]", "trainer.devices=0,1"])
    assert cfg.decomposition.lambda_rec == 8.0 and cfg.data.class_names == ["a", "b"]


def test_smoke_limits_validation(tmp_path):
    from dxai.cli.train import overrides_from, parse_args
    from dxai.training.common import make_trainer

    args = parse_args(["--smoke", f"--runs-dir={tmp_path}"])
    cfg = load_config("synthetic", overrides_from(args))
    assert cfg.trainer.limit_val_batches == 2
    trainer = make_trainer(cfg, tmp_path, "classifier", max_steps=4, val_every_steps=4)
    assert trainer.limit_val_batches == 2
    assert load_config("synthetic").trainer.limit_val_batches is None  # the default run validates on all


# --- progress ----------------------------------------------------------------------------------------

def test_progress_logs_steps_total_and_time_left(caplog):
    caplog.set_level(logging.INFO, logger="dxai.progress")
    with Progress("masks evaluation: reference", 10, every=0.0, bar=False) as progress:
        for _ in range(4):
            progress.update()
    lines = [r.getMessage() for r in caplog.records if getattr(r, "dxai_progress", False)]
    assert "masks evaluation: reference 4/10 steps" in lines[3] and "ETA" in lines[3]
    assert lines[-1].startswith("masks evaluation: reference: 4/10 steps in")


def test_progress_lines_are_throttled(caplog):
    caplog.set_level(logging.INFO, logger="dxai.progress")
    with Progress("loop", 1000, every=3600.0, bar=False) as progress:
        for _ in range(1000):
            progress.update()
    assert not [r for r in caplog.records if getattr(r, "dxai_progress", False)]
    assert duration(241) == "4m01s" and duration(3725) == "1h02m" and duration(7.4) == "7s"


def test_progress_lines_stay_off_a_terminal_that_shows_the_bar():
    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    record = logging.LogRecord("dxai.progress", logging.INFO, "", 0, "loop 1/2 steps", None, None)
    record.dxai_progress = True
    other = logging.LogRecord("dxai", logging.WARNING, "", 0, "a warning", None, None)
    assert not HideProgressOnTerminal(Stream(True)).filter(record)
    assert HideProgressOnTerminal(Stream(False)).filter(record)
    assert HideProgressOnTerminal(Stream(True)).filter(other)


def test_an_interrupted_loop_says_where_it_stopped():
    with pytest.raises(StageInterrupted) as caught:
        with Progress("masks evaluation: reference", 2000, bar=False) as progress:
            progress.set(812)
            raise KeyboardInterrupt
    caught.value.fill("masks")
    assert caught.value.sentence() == ("interrupted at step 812 of 2000 of the masks stage (masks evaluation: "
                                       "reference); the same command resumes")
    assert StageInterrupted("classifier", 57, 600).sentence() == (
        "interrupted at step 57 of 600 of the classifier stage; the same command resumes")


def test_a_second_ctrl_c_stops_at_once():
    """A first Ctrl-C inside a deferred block (a fit finishing its step) only asks; a second exits 130."""
    code = ("import os, signal, time\nfrom dxai import interrupts\ninterrupts.install()\n"
            "with interrupts.deferred():\n    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(0.2)\n"
            "    assert interrupts.requested()\n    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(10)\n"
            "print('not reached')\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == interrupts.EXIT_CODE, done.stderr
    assert "stopping after the current step" in done.stderr and "second Ctrl-C: stopped at once" in done.stderr
    assert "not reached" not in done.stdout and time.monotonic() - started < 10


# --- quiet log ---------------------------------------------------------------------------------------

def test_dependency_noise_is_filtered_at_its_source_and_dxai_warnings_show(caplog):
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        _quiet.quiet()
        message = "pkg_resources is deprecated as an API. See https://setuptools.pypa.io/"
        warnings.warn_explicit(message, UserWarning, "coeffs.py", 7, module="pytorch_wavelets.dtcwt.coeffs")
        warnings.warn_explicit("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning,
                               "_pytree.py", 21, module="pytorch_lightning.utilities._pytree")
        warnings.warn_explicit("a warning of dxai", UserWarning, "masks.py", 1, module="dxai.stages.masks")
        warnings.warn_explicit("pkg_resources is deprecated", UserWarning, "x.py", 1, module="dxai.x")
    assert [str(w.message) for w in shown] == ["a warning of dxai", "pkg_resources is deprecated"]
    caplog.set_level(logging.INFO)
    logging.getLogger("pytorch_lightning.utilities.rank_zero").info("💡 Tip: For seamless cloud logging ...")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").info("GPU available: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False"]


# --- wandb reachability ------------------------------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_wandb_reachable():
    from dxai.training.common import wandb_reachable

    started = time.monotonic()
    assert not wandb_reachable(f"http://127.0.0.1:{closed_port()}")
    assert time.monotonic() - started < 3.5
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:  # any HTTP answer counts, even an error status
        assert wandb_reachable(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()


# --- end to end: a real training process -------------------------------------------------------------

def train_command(runs: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *TINY_CLASSIFIER, f"--runs-dir={runs}", *extra]


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def seconds_between(log: str, first: str, second: str) -> float:
    def stamp(pattern: str) -> float:
        line = next(line for line in log.splitlines() if pattern in line)
        clock = re.match(r"\d{4}-\d\d-\d\d (\d\d):(\d\d):(\d\d),(\d{3})", line).groups()
        return int(clock[0]) * 3600 + int(clock[1]) * 60 + int(clock[2]) + int(clock[3]) / 1000
    return stamp(second) - stamp(first)


@pytest.mark.slow
def test_wandb_with_an_unreachable_server_goes_offline(tmp_path):
    """An API key, no WANDB_MODE, WANDB_BASE_URL on a closed port: a few seconds, one sentence, offline."""
    env = clean_env(WANDB_API_KEY="0123456789abcdef0123456789abcdef01234567",
                    WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    done = subprocess.run(train_command(tmp_path, "--logger", "wandb"), env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    elapsed = time.monotonic() - started
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    warnings_ = [line for line in log.splitlines() if "wandb server unreachable" in line]
    assert len(warnings_) == 1, log[-3000:]
    run_dir = tmp_path / "synthetic" / "smoke"
    assert f"logging offline to {run_dir / 'wandb'}; upload later with wandb sync" in warnings_[0]
    assert list((run_dir / "wandb").glob("offline-run-*"))
    assert seconds_between(log, "stage classifier: starting", "wandb server unreachable") < 5
    assert "CommError" not in log and "Traceback" not in log
    assert elapsed < 60, elapsed  # the stage alone takes some 15 s on a shared 2-core machine


@pytest.mark.slow
def test_ctrl_c_saves_the_step_exits_130_and_the_rerun_resumes(tmp_path):
    env = clean_env(DXAI_PROGRESS_SECONDS="0.2")
    command = train_command(tmp_path, "classifier.max_steps=5000", "classifier.val_every_steps=5000")
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=ROOT)
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            progress = re.search(r"stage classifier: (\d+)/5000 steps", line)
            if progress and int(progress.group(1)) >= 5:
                process.send_signal(signal.SIGINT)
                break
        lines += process.communicate(timeout=30)[0].splitlines(keepends=True)
    finally:
        process.kill()
    log = "".join(lines)
    assert process.returncode == 130, log[-3000:]
    stopped = re.search(r"interrupted at step (\d+) of 5000 of the classifier stage; the same command resumes", log)
    assert stopped, log[-3000:]
    assert "Detected KeyboardInterrupt" not in log and "Traceback" not in log
    step = int(stopped.group(1))
    run_dir = tmp_path / "synthetic" / "smoke"
    assert (run_dir / "checkpoints" / "classifier" / "last.ckpt").is_file()
    assert f"interrupted at step {step} of 5000" in (run_dir / "train.log").read_text()
    # the same command resumes; a few more steps keep the test short
    again = subprocess.run(train_command(tmp_path, f"classifier.max_steps={step + 8}",
                                         "classifier.val_every_steps=5000"),
                           env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"stage classifier: resumed from last.ckpt at step {step} of {step + 8}" in again.stderr
    import json

    assert json.loads((run_dir / "report" / "metrics.json").read_text())["classifier"]["steps"] == step + 8


def test_a_failing_wandb_init_falls_back_offline(tmp_path, monkeypatch, caplog):
    """The server answered the check but wandb.init fails (CommError): one warning, then offline."""
    import wandb

    from dxai.training import common

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setattr(common, "wandb_reachable", lambda *a, **k: True)

    class Failing:
        @property
        def experiment(self):
            raise wandb.errors.CommError("context deadline exceeded")

    class Offline:
        experiment = None

    made = []

    def fake_logger(cfg, run_dir, stage):
        made.append(os.environ.get("WANDB_MODE"))
        return Failing() if len(made) == 1 else Offline()

    monkeypatch.setattr(common, "_wandb_logger", fake_logger)
    caplog.set_level(logging.WARNING)
    logger = common.make_wandb_logger(load_config("synthetic", ["trainer.logger=wandb"]), tmp_path, "classifier")
    assert isinstance(logger, Offline) and made == [None, "offline"]
    sentences = [r.getMessage() for r in caplog.records if "wandb server" in r.getMessage()]
    assert len(sentences) == 1 and "context deadline exceeded" in sentences[0]
    assert f"logging offline to {tmp_path / 'wandb'}; upload later with wandb sync" in sentences[0]


def test_progress_of_a_worker_process_reaches_stderr_and_the_run_log(tmp_path):
    """A spawned worker (the masks stage's background reference) starts with logging unconfigured."""
    log_file = tmp_path / "train.log"
    code = ("from dxai.progress import Progress\nwith Progress('masks: reference', 3, every=0.0) as p:\n"
            "    for _ in range(3):\n        p.update()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env=clean_env(DXAI_LOG_FILE=str(log_file)))
    assert done.returncode == 0, done.stderr
    assert "masks: reference 3/3 steps" in done.stderr
    assert "masks: reference 3/3 steps" in log_file.read_text()
