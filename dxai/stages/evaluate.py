"""Evaluate stage: the evidence of a run, in ``<run>/report/`` (report.md, PNG plots and the
``evaluation`` section of metrics.json), logged to wandb as tables and images when it is the logger.

DXAI's parts and the mask predictor's come from the exported bundle (``<run>/model/``, read by
``dxai.inference.Explainer``), not from training code. On the first ``evaluation.num_images``
validation images every method explains the classifier's predicted class and is scored by
its beta-AUC (eq. 10), the mean class probabilities along beta (fig. 7), the classifier's top
probability on its agnostic part (definition 1), the independent classifiers' reading of that part
(transfer neutrality, ``dxai.measures.transfer``) and, on synthetic data, its agreement with the
true class part and background. With ``evaluation.compare_classifier`` the parts are also
judged by a second classifier (table 3). CartoonX, Pixel RDE, the mask predictor and random
rankings get rate-distortion curves on ``evaluation.rd_images`` images (CartoonX paper, fig. 7).
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from dxai.config import Config
from dxai.data.batches import first_images
from dxai.data.datamodule import build_datasets
from dxai.evaluation import plots, report
from dxai.evaluation.matching import ClassifierMatching, load_comparison
from dxai.evaluation.methods import build_methods
from dxai.evaluation.rd_comparison import RDSettings, rd_comparison
from dxai.evaluation.speed import explainer_vs_integrated_gradients
from dxai.explanation import Explanation
from dxai.inference import Explainer
from dxai.io import read_metrics, update_metrics
from dxai.measures.beta_curves import BetaCurve
from dxai.measures.decomposition import BETAS, top_probability
from dxai.measures.ground_truth import GroundTruthScores, centred_energy
from dxai.measures.transfer import TransferNeutrality, transfer_scores, transfer_sums
from dxai.normalization import Normalization
from dxai.progress import Progress
from dxai.run_folder import load_independent_classifiers, report_dir
from dxai.timing import timed
from dxai.training.common import make_logger, parse_devices

RANK_ZERO_ONLY = True
SECTION = "evaluation"
GROUND_TRUTH_KEYS = ("distinct_error", "distinct_corr", "energy_inside", "null_energy", "agnostic_psnr")
SPEED_IMAGES = 16  # the Explainer against Integrated Gradients-50 on these validation images, 3 timed runs;
# with fewer evaluation.num_images (a --smoke run), on 1 image, 1 timed run: the code path, not a figure


def is_done(cfg: Config, run_dir: Path) -> bool:
    return "beta_auc" in read_metrics(run_dir).get(SECTION, {}) and (report_dir(run_dir) / "report.md").is_file()


def _device(cfg: Config) -> torch.device:
    """The first device of ``trainer.devices`` on the configured accelerator (the CPU without a GPU)."""
    devices = parse_devices(cfg.trainer.devices)
    wants_gpu = cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() and devices != 0
    return torch.device(f"cuda:{devices[0] if isinstance(devices, list) else 0}" if wants_gpu else "cpu")


class MethodScores:
    """Everything the report says about one method, accumulated over batches."""

    def __init__(self, num_classes: int, normalization, independent: list):
        self.curve = BetaCurve(num_classes)
        self.transfer = TransferNeutrality(independent)  # independent classifiers on the agnostic part
        self.truth = GroundTruthScores(normalization)
        self.agnostic_top_sum = 0.0
        self.energy = torch.zeros(2, dtype=torch.float64)  # sum ||distinct||^2, sum ||x - mean(x)||^2
        self.seconds = 0.0

    def add(self, classifier, explanation: Explanation, batch: dict, seconds: float) -> None:
        images, labels = explanation.images, batch["label"].to(explanation.images.device)
        self.curve.add(classifier, images, explanation.distinct, labels)
        self.agnostic_top_sum += float(top_probability(classifier, explanation.agnostic).sum())
        self.transfer.add(explanation.agnostic, labels)
        self.energy += torch.stack([explanation.distinct.double().pow(2).sum(), centred_energy(images).sum()]).cpu()
        if "class_part" in batch:
            self.truth.add(images, explanation.distinct, explanation.agnostic, batch["class_part"],
                           batch["background"])
        self.seconds += seconds

    @property
    def distinct_energy(self) -> float:
        """||psi_distinct||^2 / ||x - mean(x)||^2: how much of the images the method changes."""
        return float(self.energy[0] / self.energy[1])


def reference_parts(images: torch.Tensor, labels: torch.Tensor, batch: dict) -> dict[str, Explanation]:
    """The scoreboard's reference rows on synthetic data: the true class part as the distinct part,
    the zero part, and the image itself (all in the classifier's domain)."""
    class_part = batch["class_part"].to(images.device)
    parts = {"reference_truth": class_part, "reference_zero": torch.zeros_like(images), "reference_image": images}
    return {name: Explanation(images=images, target=labels, distinct=part, agnostic=images - part)
            for name, part in parts.items()}


def classes_in_turn(dataset):
    """A class-per-folder split (sorted by class) reordered to take the classes in turn, so that
    the first ``num_images`` (and ``rd_images``) hold every class; other data sets as they are."""
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return dataset
    by_class: dict[int, list[int]] = {}
    for index, (_, label) in enumerate(samples):
        by_class.setdefault(label, []).append(index)
    order = [indices[rank] for rank in range(max(len(indices) for indices in by_class.values()))
             for indices in by_class.values() if rank < len(indices)]
    return Subset(dataset, order)


def _first_of_each_class(explanation: Explanation, labels: torch.Tensor, num_classes: int) -> dict[int, Explanation]:
    return {label: explanation[int(torch.nonzero(labels == label)[0])]
            for label in range(num_classes) if bool((labels == label).any())}


def _comparison(cfg: Config, classifier, num_classes: int, device) -> tuple[ClassifierMatching | None, dict, dict]:
    """Classifier matching against ``evaluation.compare_classifier``: the matching accumulator,
    the methods that make parts for classifier B (its DXAI when that run was exported) and the
    names of both classifiers."""
    e = cfg.evaluation
    if not e.compare_classifier:
        return None, {}, {}
    other_cfg, other_classifier = load_comparison(cfg, e.compare_classifier)
    other_classifier = other_classifier.to(device)
    exported = (Path(e.compare_classifier) / "model" / "model.json").is_file()
    other_explainer = Explainer.from_bundle(e.compare_classifier, device) if exported else None
    normalization = Normalization.symmetric(cfg.data.img_channels)
    methods = build_methods(other_explainer, other_classifier, normalization, e.matching_baselines, e.path_steps,
                            e.batch_size, e.seed)
    names = {"A": f"{cfg.run.run_name}, {cfg.classifier.arch}",
             "B": f"{Path(e.compare_classifier).name}, {other_cfg.classifier.arch}"}
    return ClassifierMatching({"A": classifier, "B": other_classifier}, num_classes), methods, names


def _score(cfg: Config, explainer: Explainer, loader: DataLoader, device,
           independent: list) -> tuple[dict, dict, dict, dict | None]:
    """Every method on every batch: the scores per method, the first batch's explanations, the
    first batch, and the matching table (None without a comparison classifier)."""
    e = cfg.evaluation
    classifier, num_classes = explainer.classifier, len(explainer.class_names)
    methods = build_methods(explainer, classifier, explainer.normalization, e.baselines, e.path_steps, e.batch_size,
                            e.seed)
    scores = {name: MethodScores(num_classes, explainer.normalization, independent) for name in methods}
    matching, comparison_methods, names = _comparison(cfg, classifier, num_classes, device)
    first: dict[str, Explanation] = {}
    first_batch: dict = {}
    bar = Progress("evaluate: explanations", len(loader) * (len(methods) + len(comparison_methods)), unit="call")
    for index, batch in enumerate(loader):
        images, labels = batch["image"].to(device), batch["label"].to(device)
        images01 = explainer.normalization.denormalize(images).clamp(0, 1)
        for name, method in methods.items():
            explanation, seconds = timed(partial(method, images01), device)
            bar.update(batch=f"{index + 1}/{len(loader)}", method=name)
            scores[name].add(classifier, explanation, batch, seconds)
            if matching is not None:
                matching.add("A", name, images, explanation.distinct, labels)
            if index == 0:
                first[name] = explanation
        if "class_part" in batch:
            for name, explanation in reference_parts(images, labels, batch).items():
                scores.setdefault(name, MethodScores(num_classes, explainer.normalization, independent)).add(
                    classifier, explanation, batch, 0.0)
        for name, method in comparison_methods.items():
            matching.add("B", name, images, method(images01).distinct, labels)
            bar.update(batch=f"{index + 1}/{len(loader)}", method=f"{name} (classifier B)")
        if index == 0:
            first_batch = batch
    bar.close()
    table = None if matching is None else {"classifiers": names, "beta_auc": matching.table(),
                                           "matched": matching.matched()}
    return scores, first, first_batch, table


def _section(cfg: Config, explainer: Explainer, scores: dict[str, MethodScores], count: int,
             synthetic: bool, device) -> dict:
    reference = next(iter(scores.values())).curve
    truths = {name: s.truth.result() for name, s in scores.items()} if synthetic else None
    section = {
        "num_images": count, "betas": list(BETAS), "classes": list(explainer.class_names),
        "accuracy": reference.accuracy[0],
        "beta_auc": {name: s.curve.auc for name, s in scores.items()},
        "beta_accuracy": {name: s.curve.accuracy for name, s in scores.items()},
        "class_probabilities": {name: s.curve.class_probabilities.tolist() for name, s in scores.items()},
        "agnostic_max_prob": {name: s.agnostic_top_sum / count for name, s in scores.items()},
        "transfer": {name: s.transfer.result() for name, s in scores.items()} if cfg.classifier.independent else None,
        "seconds_per_image": {name: s.seconds / count for name, s in scores.items()},
        "neutral_auc": {name: s.curve.neutral_auc for name, s in scores.items()},
        "distinct_energy": {name: s.distinct_energy for name, s in scores.items()},
        **{f"gt_{key}": ({name: truth[key] for name, truth in truths.items()} if truths else None)
           for key in GROUND_TRUTH_KEYS},
        "settings": {"classifier": cfg.classifier.arch, "path_steps": cfg.evaluation.path_steps,
                     "batch_size": cfg.evaluation.batch_size, "device": str(device), "seed": cfg.evaluation.seed},
    }
    if "dxai" in scores:
        others = [name for name in scores if name != "dxai" and not name.startswith("reference_")]
        section["dxai_lowest_beta_auc"] = all(section["beta_auc"]["dxai"] < section["beta_auc"][name]
                                              for name in others)
        section["dxai_lowest_neutral_auc"] = all(section["neutral_auc"]["dxai"] < section["neutral_auc"][name]
                                                 for name in others)
        if section["transfer"]:
            true_prob = {name: result["true_prob"] for name, result in section["transfer"].items()}
            section["dxai_lowest_transfer_true_prob"] = all(true_prob["dxai"] < true_prob[name] for name in others)
        if synthetic:
            corr, error = section["gt_distinct_corr"], section["gt_distinct_error"]
            section["dxai_highest_gt_corr"] = all(corr["dxai"] > corr[name] for name in others)
            section["dxai_lowest_gt_error"] = all(error["dxai"] < error[name]
                                                  for name in [*others, "reference_zero", "reference_image"])
    return section


def _panel_rows(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of ``count`` images that take the classes in turn: the first image of every
    class, then the second, and so on."""
    by_class = [torch.nonzero(labels == label).flatten() for label in labels.unique()]
    order = [int(indices[rank]) for rank in range(max(len(indices) for indices in by_class))
             for indices in by_class if rank < len(indices)]
    return torch.tensor(order[:count])


@torch.no_grad()
def agnostic_predictions(agnostic: torch.Tensor, classifiers: dict, classes: list[str]) -> list[list[str]]:
    """Per image, one line per classifier: the class it reads in the agnostic part and its probability."""
    lines = [[] for _ in range(len(agnostic))]
    for name, classifier in classifiers.items():
        device = next(classifier.parameters()).device
        probabilities = classifier(agnostic.to(device)).softmax(1).cpu()
        for row, p in enumerate(probabilities):
            lines[row].append(f"{name}: {classes[int(p.argmax())]} {float(p.max()):.2f}")
    return lines


def _plots(section: dict, first: dict[str, Explanation], first_batch: dict, explainer: Explainer,
           panel_images: int, folder: Path, independent: list) -> dict[str, Path]:
    normalization, classes = explainer.normalization, section["classes"]
    labels = first_batch["label"]
    rows = _panel_rows(labels, panel_images)
    panel = {name: explanation[rows] for name, explanation in first.items()}
    class_parts = first_batch["class_part"][rows] if "class_part" in first_batch else None
    readers = {"A": explainer.classifier, **({"B": independent[0]} if independent else {})}
    predictions = agnostic_predictions(panel["dxai"].agnostic, readers, classes) if "dxai" in panel else None
    images = {"beta_accuracy": plots.plot_beta_accuracy(section, folder / plots.BETA_PLOT),
              "decompositions": plots.decomposition_grid(panel, normalization, classes, folder / plots.GRID,
                                                          labels[rows], class_parts, predictions)}
    if "dxai" in first:
        examples = _first_of_each_class(first["dxai"].to("cpu"), labels, len(classes))
        images["class_probabilities"] = plots.plot_class_probabilities(section, examples, normalization,
                                                                       folder / plots.PROBABILITY_PLOT)
    if section["rate_distortion"] is not None:
        images["rate_distortion"] = plots.plot_rate_distortion(section["rate_distortion"], folder / plots.RD_PLOT)
    return images


def run(cfg: Config, run_dir: Path) -> dict:
    """Score every method, write the report, log it to wandb; returns the headline numbers."""
    start = time.perf_counter()
    e = cfg.evaluation
    device = _device(cfg)
    explainer = Explainer.from_bundle(run_dir, device)
    _, val_set = build_datasets(cfg.data)
    val_set = classes_in_turn(val_set)
    subset = Subset(val_set, range(min(e.num_images, len(val_set))))
    loader = DataLoader(subset, batch_size=e.batch_size, shuffle=False, num_workers=cfg.data.num_workers)
    independent = [network.to(device) for network in load_independent_classifiers(cfg, run_dir)]
    scores, first, first_batch, matching = _score(cfg, explainer, loader, device, independent)
    section = _section(cfg, explainer, scores, len(subset), "class_part" in first_batch, device)
    section["matching"] = matching
    if "class_part" in first_batch:  # the yardstick of neutrality: the classifiers on the true backgrounds
        section["background_max_prob"] = float(torch.cat([
            top_probability(explainer.classifier, batch["background"].to(device)).cpu() for batch in loader]).mean())
        if independent:
            sums = sum(transfer_sums(independent, batch["background"].to(device), batch["label"].to(device)).cpu()
                       for batch in loader)
            section["transfer_background"] = transfer_scores(sums, len(subset))
    section["rate_distortion"] = None
    if e.rd_images > 0:
        settings = RDSettings(steps=e.rd_steps, lr=e.rd_lr, num_samples=e.rd_num_samples,
                              curve_samples=e.rd_curve_samples, seed=e.seed)
        rd_images = first_images(val_set, e.rd_images, explainer.normalization)
        section["rate_distortion"] = rd_comparison(explainer, rd_images, settings)
    folder = report_dir(run_dir)
    images = _plots(section, {name: x.to("cpu") for name, x in first.items()}, first_batch, explainer,
                    e.panel_images, folder, independent)
    full_speed = e.num_images >= SPEED_IMAGES
    speed_images = first_images(val_set, SPEED_IMAGES if full_speed else 1, explainer.normalization)
    speed = explainer_vs_integrated_gradients(explainer, speed_images, repeats=3 if full_speed else 1)
    update_metrics(run_dir, "inference", {**speed, "classifier": cfg.classifier.arch})
    section["wall_seconds"] = time.perf_counter() - start
    section["files"] = sorted(path.name for path in images.values()) + ["report.md"]
    report.write_markdown(section, f"{cfg.run.dataset}/{cfg.run.run_name}", folder / "report.md")
    update_metrics(run_dir, SECTION, section)
    if cfg.trainer.logger == "wandb":
        report.log_to_wandb(make_logger(cfg, run_dir, "evaluate"), section, images)
    headline = {"beta_auc": section["beta_auc"], "wall_seconds": round(section["wall_seconds"], 1)}
    if section["gt_distinct_corr"] is not None:
        headline["gt_distinct_corr"] = section["gt_distinct_corr"]
    return headline
