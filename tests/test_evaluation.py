"""The evaluation: beta-AUC tells a true decomposition from a random one, and the evaluate stage
runs end to end on a tiny run made by the real pipeline (report, plots, metrics, matching, wandb).

That every heatmap baseline's parts add up to the image is tested in tests/test_baselines.py.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch.nn import functional as F

from dxai.config import load_config, save_config
from dxai.data.synthetic import SyntheticDataset
from dxai.evaluation.matching import MatchingError, load_comparison
from dxai.explanation import heatmap_decomposition
from dxai.measures.beta_curves import BetaCurve
from dxai.measures.ground_truth import GroundTruthScores
from dxai.nets.classifier import build_classifier
from dxai.normalization import Normalization
from dxai.pipeline import run_pipeline
from dxai.stages.evaluate import is_done

SIZE = 16
METHODS = ["dxai", "random", "grad_cam", "guided_grad_cam", "integrated_gradients", "gradient_shap", "lrp",
           "internal_influence"]
TINY = [
    "data.img_size=16", "data.train_size=32", "data.val_size=16", "data.batch_size=8",
    "classifier.max_steps=4", "classifier.val_every_steps=2", "trainer.progress_bar=false", "trainer.accelerator=cpu",
    "decomposition.max_steps=2", "decomposition.val_every_steps=2", "decomposition.image_every_steps=2",
    "decomposition.base_channels=4", "decomposition.max_channels=8", "decomposition.disc_base_channels=4",
    "decomposition.disc_max_channels=8", "decomposition.style_dim=8", "decomposition.mapping_hidden=16",
    "decomposition.batch_size=8", "masks.max_steps=2", "masks.base_channels=4", "masks.eval_images=2",
    "masks.eval_reference_steps=3", "masks.eval_refine_steps=2", "masks.eval_bank_samples=2",
    "evaluation.num_images=12", "evaluation.batch_size=8", "evaluation.path_steps=2", "evaluation.panel_images=3",
    "evaluation.rd_images=2", "evaluation.rd_steps=2", "evaluation.rd_num_samples=2", "evaluation.rd_curve_samples=2",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two threads on two cores shared with other jobs run these small models many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tensors(dataset) -> dict[str, torch.Tensor]:
    items = [dataset[index] for index in range(len(dataset))]
    return {key: torch.stack([torch.as_tensor(item[key]) for item in items])
            for key in ("image", "label", "class_part")}


def test_true_class_part_beats_a_random_decomposition():
    """With a trained classifier, removing the true class part lowers the accuracy far more than
    removing a random heatmap's part: a lower beta-AUC and a higher ground-truth correlation."""
    normalization = Normalization.symmetric(3)
    train = _tensors(SyntheticDataset(size=512, img_size=SIZE, seed=0, normalization=normalization))
    val = _tensors(SyntheticDataset(size=96, img_size=SIZE, seed=1, normalization=normalization))
    torch.manual_seed(0)
    classifier = build_classifier("simple", 3, 3, SIZE)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=3e-3)
    for _ in range(200):
        index = torch.randint(0, len(train["label"]), (32,))
        loss = F.cross_entropy(classifier(train["image"][index]), train["label"][index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    classifier.eval()
    images, labels, class_part = val["image"], val["label"], val["class_part"]
    heatmap = torch.rand(len(images), 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    random_distinct, random_agnostic = heatmap_decomposition(images, heatmap)
    perfect, random = BetaCurve(3), BetaCurve(3)
    perfect.add(classifier, images, class_part, labels)
    random.add(classifier, images, random_distinct, labels)
    assert perfect.accuracy[0] == random.accuracy[0] > 0.7
    assert perfect.auc < random.auc - 0.1
    assert perfect.accuracy[-1] < 0.5
    probabilities = perfect.class_probabilities
    assert probabilities.shape == (3, 11, 3) and torch.allclose(probabilities.sum(2), torch.ones(3, 11).double())
    truth, noise = GroundTruthScores(normalization), GroundTruthScores(normalization)
    truth.add(images, class_part, images - class_part, class_part, images - class_part)
    noise.add(images, random_distinct, random_agnostic, class_part, images - class_part)
    assert truth.result()["distinct_corr"] == pytest.approx(1.0) and truth.result()["distinct_error"] == 0
    assert noise.result()["distinct_corr"] < 0.8 and noise.result()["distinct_error"] > 1
    assert truth.result()["agnostic_psnr"] > noise.result()["agnostic_psnr"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny run through every stage, and a second run with only a classifier (for matching)."""
    root = tmp_path_factory.mktemp("runs")
    run_dir = run_pipeline(load_config("synthetic", [f"run.runs_dir={root}", "run.run_name=tiny", *TINY]), "all")
    other = run_pipeline(load_config("synthetic", [f"run.runs_dir={root}", "run.run_name=other",
                                                   "trainer.seed=1", *TINY]), "classifier")
    return root, run_dir, other


def test_evaluate_stage_writes_the_report(runs):
    _, run_dir, _ = runs
    cfg = load_config("synthetic", [f"run.runs_dir={run_dir.parent.parent}", "run.run_name=tiny", *TINY])
    assert is_done(cfg, run_dir)
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    section = metrics["evaluation"]
    assert metrics["inference"]["speedup_vs_integrated_gradients"] > 0
    references = {"reference_truth", "reference_zero", "reference_image"}
    assert set(section["beta_auc"]) == set(METHODS) | references
    assert section["gt_distinct_error"]["reference_truth"] == 0 and section["gt_distinct_error"]["reference_zero"] == 1
    assert set(section["neutral_auc"]) == set(METHODS) | references
    assert set(section["gt_distinct_corr"]) == set(METHODS) | references
    assert all(len(section["beta_accuracy"][name]) == 11 for name in METHODS)
    assert section["num_images"] == 12 and section["matching"] is None
    rd = section["rate_distortion"]
    assert set(rd["curves"]) == {"keep", "randomize"}
    assert set(rd["curves"]["keep"]) == {"cartoonx", "predictor", "random_wavelet", "pixel_rde", "random_pixel"}
    report = (run_dir / "report" / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert set(linked) == {"beta_accuracy.png", "class_probabilities.png", "decompositions.png", "rate_distortion.png"}
    for name in linked:
        assert (run_dir / "report" / name).stat().st_size > 1000
    assert "Grad-CAM" in report and "Not run" in report  # the matching section says how to run it


def test_matching_and_wandb(runs):
    root, run_dir, other = runs
    cfg = load_config("synthetic", [*TINY, f"run.runs_dir={root}", "run.run_name=tiny", "trainer.logger=wandb",
                                    f"evaluation.compare_classifier={other}", "evaluation.rd_images=0"])
    run_pipeline(cfg, "evaluate")
    matching = json.loads((run_dir / "report" / "metrics.json").read_text())["evaluation"]["matching"]
    assert set(matching["beta_auc"]["A"]) == set(METHODS)
    assert set(matching["beta_auc"]["B"]) == {"grad_cam", "guided_grad_cam", "lrp"}  # run B was not exported
    assert set(matching["beta_auc"]["A"]["dxai"]) == {"A", "B"}
    assert "dxai made for A" in matching["matched"]
    section = json.loads((run_dir / "report" / "metrics.json").read_text())["evaluation"]
    assert section["rate_distortion"] is None and "rate_distortion.png" not in section["files"]
    logged = {(path.parent.name, path.name.split("_0_")[0])
              for path in (run_dir / "wandb").glob("offline-run-*/files/media/*/evaluation/*/*")}
    assert logged == {("table", "beta_auc"), ("table", "beta_accuracy"), ("table", "class_probabilities"),
                      ("table", "matching"), ("plot", "beta_accuracy"), ("plot", "class_probabilities"),
                      ("plot", "decompositions")}


def test_matching_refuses_a_classifier_of_other_data(runs, tmp_path):
    root, run_dir, _ = runs
    cfg = load_config("synthetic", [f"run.runs_dir={root}", "run.run_name=tiny", *TINY])
    other = load_config("synthetic", ["data.img_size=24"])
    save_config(other, tmp_path / "config.yaml")
    with pytest.raises(MatchingError, match="data.img_size: 16 here, 24 there"):
        load_comparison(cfg, tmp_path)
    with pytest.raises(MatchingError, match="not a dxai run folder"):
        load_comparison(cfg, tmp_path / "missing")
