"""Train dxai on a data set: classifier -> decomposition -> mask predictor -> export -> report.

``dxai-train`` and ``python train.py`` run this.

    python train.py                                   # the embedded synthetic default
    python train.py --dataset afhq --data-root /data/afhq --devices 8 --strategy ddp
    python train.py --stage classifier decomposition.max_steps=500

Every stage is resumable (an interrupted run continues from its last checkpoint) and is
skipped when its result already exists. Results live in <runs-dir>/<dataset>/<run-name>/, the log
in <run>/train.log. Ctrl-C saves the running step and exits with code 130; the same command resumes.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dxai import interrupts
from dxai.allocator import keep_freed_memory
from dxai.config import available_datasets, load_config
from dxai.errors import DXAIError
from dxai.interrupts import StageInterrupted
from dxai.io import os_error_sentence
from dxai.pipeline import remove_log_file, run_pipeline
from dxai.progress import HideProgressOnTerminal
from dxai.stages import STAGES

FLAGS = {  # command-line flag -> configuration key
    "data_root": "data.root", "img_size": "data.img_size", "batch_size": "data.batch_size",
    "max_steps": None, "devices": "trainer.devices", "num_nodes": "trainer.num_nodes",
    "strategy": "trainer.strategy", "precision": "trainer.precision", "logger": "trainer.logger",
    "seed": "trainer.seed", "runs_dir": "run.runs_dir", "run_name": "run.run_name",
    "classifier": "classifier.arch", "classifier_weights": "classifier.weights",
    "compare_classifier": "evaluation.compare_classifier",
}


TRAINED_STAGES = ("classifier", "decomposition", "masks")  # the stages --max-steps applies to
# Flags taken literally, set after the configuration is loaded: a dotted override would be parsed as
# YAML (--run-name 007 -> 7, 2e7 -> 20000000.0) and resolved by OmegaConf (${oc.env:HOME}).
LITERAL_FLAGS = ("data_root", "devices", "strategy", "precision", "runs_dir", "run_name", "classifier_weights",
                 "compare_classifier")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic", help=f"one of {available_datasets()}")
    parser.add_argument("--stage", default="all", choices=["all", *STAGES])
    parser.add_argument("--smoke", action="store_true",
                        help="every stage with its smallest budgets (configs/base/smoke.yaml, run name 'smoke'): "
                             "checks a new data set and machine end to end in minutes")
    parser.add_argument("--data-root", help="folder data sets: ROOT/train/<class>, ROOT/val/<class> "
                                            "(default: $DXAI_DATA)")
    parser.add_argument("--img-size", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-steps", type=int, help="training steps of the stage(s) run")
    parser.add_argument("--devices", help="e.g. 1, 8, 0,1 or auto")
    parser.add_argument("--num-nodes", type=int)
    parser.add_argument("--strategy", help="auto, ddp, ddp_find_unused_parameters_true, ...")
    parser.add_argument("--precision", help="32-true, bf16-mixed, 16-mixed")
    parser.add_argument("--logger", choices=["csv", "wandb"])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--runs-dir")
    parser.add_argument("--run-name")
    parser.add_argument("--classifier", choices=["resnet18", "simple"])
    parser.add_argument("--classifier-weights", help="use these trained weights instead of training one")
    parser.add_argument("--compare-classifier", help="a second classifier's run folder for classifier matching")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. decomposition.lr=2e-4")
    return parser.parse_intermixed_args(argv)  # dotted overrides may come before, between or after flags


def smoke_overrides() -> list[str]:
    """configs/base/smoke.yaml as dotted overrides: they go after the data set's file and before the
    command line's flags and overrides."""
    import json

    from omegaconf import OmegaConf

    from dxai.config import CONFIG_DIR

    def flatten(node: dict, prefix: str = "") -> list[str]:
        items = []
        for key, value in node.items():  # JSON values are YAML: strings, numbers, null, lists
            name = f"{prefix}{key}"
            items += flatten(value, f"{name}.") if isinstance(value, dict) else [f"{name}={json.dumps(value)}"]
        return items

    return flatten(OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "base" / "smoke.yaml")))


def overrides_from(args: argparse.Namespace) -> list[str]:
    overrides = smoke_overrides() if getattr(args, "smoke", False) else []
    for flag, key in FLAGS.items():
        value = getattr(args, flag)
        if value is None or flag in LITERAL_FLAGS:
            continue
        if flag == "max_steps":
            stages = STAGES if args.stage == "all" else [args.stage]
            overrides += [f"{name}.max_steps={value}" for name in stages if name in TRAINED_STAGES]
        else:
            overrides.append(f"{key}={value}")
    return overrides + list(args.overrides)


def apply_literal_flags(cfg, args: argparse.Namespace):
    """Set the ``LITERAL_FLAGS`` given on the command line, as the strings they are."""
    for flag in LITERAL_FLAGS:
        value = getattr(args, flag, None)
        if value is not None:
            section, name = FLAGS[flag].split(".")
            setattr(getattr(cfg, section), name, value)
    return cfg


def setup_logging() -> None:
    """INFO and above to stderr (dxai's own warnings included); progress lines stay off a terminal,
    where the bars show them. ``run_pipeline`` adds ``<run>/train.log``. Like ``logging.basicConfig``,
    this leaves a root logger that already has handlers (an application's, pytest's) as it is."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(HideProgressOnTerminal(sys.stderr))
        handler.dxai_console = True
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()
    setup_logging()
    previous_handler = interrupts.install()
    try:
        cfg = apply_literal_flags(load_config(args.dataset, overrides_from(args)), args)
        run_dir = run_pipeline(cfg, args.stage, log_file=True)  # validates the settings before any work
    except StageInterrupted as stop:
        from pytorch_lightning.utilities.rank_zero import rank_zero_only

        if rank_zero_only.rank == 0:
            logging.getLogger("dxai").warning("%s", stop.sentence())
        return interrupts.EXIT_CODE
    except DXAIError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, a read-only runs folder: one sentence, not a traceback
        print(f"error: {os_error_sentence(error)}", file=sys.stderr)
        return 2
    finally:
        remove_log_file()
        interrupts.restore(previous_handler)
        end_process_group()
    print(f"\nResults are in {run_dir}: config.yaml, checkpoints/, report/metrics.json")
    return 0


def end_process_group() -> None:
    """Destroy the DDP process group, if any, before the interpreter exits: gloo's threads still running
    at exit make a process abort after its work is done ("terminate called without an active exception",
    seen once in the 2-node test)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
