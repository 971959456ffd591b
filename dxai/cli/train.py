"""Train dxai on a data set: classifier -> decomposition -> mask predictor -> export -> report.

``dxai-train`` and ``python train.py`` run this.

    python train.py                                   # the embedded synthetic default
    python train.py --dataset afhq --data-root /data/afhq --devices 8 --strategy ddp
    python train.py --stage classifier decomposition.max_steps=500

Every stage is resumable (an interrupted run continues from its last checkpoint) and is
skipped when its result already exists. Results live in <runs-dir>/<dataset>/<run-name>/.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from dxai.config import available_datasets, load_config
from dxai.errors import DXAIError
from dxai.pipeline import run_pipeline
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


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic", help=f"one of {available_datasets()}")
    parser.add_argument("--stage", default="all", choices=["all", *STAGES])
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
    return parser.parse_args(argv)


def overrides_from(args: argparse.Namespace) -> list[str]:
    overrides = []
    for flag, key in FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if flag == "max_steps":
            stages = STAGES if args.stage == "all" else [args.stage]
            overrides += [f"{name}.max_steps={value}" for name in stages if name in TRAINED_STAGES]
        else:
            overrides.append(f"{key}={value}")
    return overrides + list(args.overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message=".*pkg_resources is deprecated.*")
    try:
        cfg = load_config(args.dataset, overrides_from(args))
        run_dir = run_pipeline(cfg, args.stage)
    except DXAIError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"\nResults are in {run_dir}: config.yaml, checkpoints/, report/metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
