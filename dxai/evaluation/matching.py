"""Classifier matching (DXAI paper, table 3): parts made for classifier A should lower A's
accuracy more than B's, when both classifiers were trained on the same data.

Classifier A is the run's own; B is the classifier of another run folder (``train.py
--compare-classifier runs/<dataset>/<other>``). Parts made for A are judged by both, and so
are parts made for B: its DXAI parts when that run was exported, and the baselines for B.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dxai.config import Config, read_config
from dxai.errors import DXAIError
from dxai.measures.beta_curves import BetaCurve
from dxai.run_folder import load_classifier

DATA_KEYS = ("kind", "family", "num_classes", "img_size", "img_channels")
TOLERANCE = 1e-6  # beta-AUCs closer than this count as equal (float rounding of equal curves)


class MatchingError(DXAIError):
    """A comparison classifier that cannot be compared with the run's own."""


def load_comparison(cfg: Config, other_run: str | Path) -> tuple[Config, nn.Module]:
    """The configuration and frozen classifier of ``other_run``, checked to share the run's data."""
    other_run = Path(other_run).expanduser()
    if not (other_run / "config.yaml").is_file():
        raise MatchingError(f"{other_run} is not a dxai run folder (no config.yaml); give the folder of a run "
                            "whose classifier was trained on the same data, e.g. runs/synthetic/other made by "
                            "python train.py --stage classifier --classifier resnet18 --run-name other")
    other = read_config(other_run / "config.yaml")
    differing = [f"data.{key}: {getattr(cfg.data, key)} here, {getattr(other.data, key)} there"
                 for key in DATA_KEYS if getattr(cfg.data, key) != getattr(other.data, key)]
    if differing:
        raise MatchingError(f"the classifier of {other_run} was trained on other data ({'; '.join(differing)}); "
                            "classifier matching needs two classifiers of the same data set")
    return other, load_classifier(other, other_run)


class ClassifierMatching:
    """beta-curves of every (made for, method) pair, judged by both classifiers."""

    def __init__(self, classifiers: dict[str, nn.Module], num_classes: int):
        self.classifiers = classifiers
        self.num_classes = num_classes
        self.curves: dict[tuple[str, str, str], BetaCurve] = {}

    def add(self, made_for: str, method: str, images: torch.Tensor, distinct: torch.Tensor,
            labels: torch.Tensor) -> None:
        for judge, classifier in self.classifiers.items():
            curve = self.curves.setdefault((made_for, method, judge), BetaCurve(self.num_classes))
            curve.add(classifier, images, distinct, labels)

    def table(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{made_for: {method: {judged_by: beta-AUC}}}``."""
        table: dict = {}
        for (made_for, method, judge), curve in self.curves.items():
            table.setdefault(made_for, {}).setdefault(method, {})[judge] = curve.auc
        return table

    def matched(self) -> dict[str, bool]:
        """Per ``<method> made for <X>``: is its beta-AUC lower when X itself judges?"""
        result = {}
        for made_for, methods in self.table().items():
            for method, aucs in methods.items():
                others = [auc for judge, auc in aucs.items() if judge != made_for]
                result[f"{method} made for {made_for}"] = all(aucs[made_for] < auc - TOLERANCE for auc in others)
        return result
