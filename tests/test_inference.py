"""The export bundle, the Explainer and infer.py, on a tiny run made by the real pipeline."""

import csv
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dxai.bundle import BundleError
from dxai.config import load_config
from dxai.inference import Explainer
from dxai.nets.generator import decompose
from dxai.nets.mapping import class_styles
from dxai.pipeline import run_pipeline
from dxai.run_folder import load_classifier, load_decomposition, load_mask_predictor
from infer import main as infer_main

TINY_STAGES = [
    "decomposition.max_steps=2", "decomposition.val_every_steps=2", "decomposition.image_every_steps=2",
    "decomposition.base_channels=4", "decomposition.max_channels=8", "decomposition.disc_base_channels=4",
    "decomposition.disc_max_channels=8", "decomposition.style_dim=8", "decomposition.mapping_hidden=16",
    "decomposition.num_downsample=2", "decomposition.batch_size=8",
    "masks.max_steps=2", "masks.base_channels=4", "masks.eval_images=2", "masks.eval_reference_steps=3",
    "masks.eval_refine_steps=2", "masks.eval_bank_samples=2",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    overrides = [
        f"run.runs_dir={root}", "run.run_name=tiny", "data.img_size=16", "data.train_size=32",
        "data.val_size=16", "data.batch_size=8", "classifier.max_steps=4", "classifier.val_every_steps=2",
        "trainer.progress_bar=false", "trainer.accelerator=cpu", *TINY_STAGES,
    ]
    cfg = load_config("synthetic", overrides)
    for stage in ("classifier", "decomposition", "masks", "export"):
        run_pipeline(cfg, stage)
    return cfg.run_dir


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_bundle_round_trip_matches_the_training_time_modules(run_dir, images):
    cfg = load_config("synthetic", [f"run.runs_dir={run_dir.parent.parent}", "run.run_name=tiny", "data.img_size=16",
                                    *TINY_STAGES])
    explainer = Explainer.from_bundle(run_dir)
    explanation = explainer.explain(images)
    x = images * 2 - 1
    classifier = load_classifier(cfg, run_dir)
    generator, mapping = load_decomposition(cfg, run_dir)
    predictor = load_mask_predictor(cfg, run_dir)
    assert torch.allclose(explanation.probabilities, classifier(x).softmax(1), atol=1e-6)
    branches = decompose(generator, class_styles(mapping, cfg.data.num_classes), x, explanation.predicted)
    # float rounding only: the Explainer splits the batch over the cores and runs the fast forward
    assert torch.allclose(explanation.branches, branches, atol=1e-5)
    masks = predictor(images, explanation.predicted)
    assert torch.allclose(explanation.mask, torch.cat([band.flatten(1) for band in masks], 1), atol=1e-6)
    manifest = json.loads((run_dir / "model" / "model.json").read_text())
    assert manifest["class_names"] == ["square", "disk", "triangle"] and manifest["img_size"] == 16


def test_same_image_same_parts_and_parts_add_up(run_dir, images):
    explainer = Explainer.from_bundle(run_dir / "model")
    first, second = explainer.explain(images), explainer.explain(images)
    assert torch.equal(first.distinct, second.distinct) and torch.equal(first.cartoon, second.cartoon)
    assert torch.allclose(first.distinct + first.agnostic, first.branches.sum(1), atol=1e-6)
    alone = explainer.explain(images[1:2])
    assert torch.allclose(alone.distinct, first.distinct[1:2], atol=1e-5)


def test_target_explains_the_chosen_class(run_dir, images):
    explainer = Explainer.from_bundle(run_dir)
    explanation = explainer.explain(images, target=2)
    assert explanation.target.tolist() == [2, 2, 2]
    refined = explainer.explain(images, target=2, refine_steps=2)
    assert refined.mask.shape == explanation.mask.shape
    assert not torch.equal(refined.mask, explanation.mask)


def test_refinement_follows_the_bundles_refinement_schedule(run_dir, images, monkeypatch):
    from dxai.explain import rde

    explainer = Explainer.from_bundle(run_dir)
    used = []
    original = rde.MaskOptimizer.__init__

    def spy(self, objective, initial, lr=1e-3, seeds=None, samples_per_call=128, schedule=None, total_steps=0):
        used.append((schedule, total_steps))
        original(self, objective, initial, lr, seeds, samples_per_call, schedule, total_steps)

    monkeypatch.setattr(rde.MaskOptimizer, "__init__", spy)
    explainer.explain(images, refine_steps=3)
    c = load_config("synthetic").cartoonx
    expected = rde.Schedule(c.refine_lr, c.refine_final_lr_fraction, c.refine_num_samples, c.refine_l1_at_zero,
                            c.refine_ones_track_from)
    # 3 steps: the all-ones track joins after ceil(0.1 * 3) = 1 step, with the schedule's remaining 2
    assert used == [(expected, 3), (dataclasses.replace(expected, ones_track_from=None), 2)]


def test_bad_bundles_are_clear_errors(run_dir, tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        Explainer.from_bundle(tmp_path / "nowhere")
    with pytest.raises(BundleError, match="export the run first"):
        Explainer.from_bundle(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(run_dir / "model", broken)
    (broken / "generator.safetensors").unlink()
    with pytest.raises(BundleError, match="generator.safetensors is missing"):
        Explainer.from_bundle(broken)
    mixed = tmp_path / "mixed"
    shutil.copytree(run_dir / "model", mixed)
    shutil.copy(mixed / "mask_predictor.safetensors", mixed / "classifier.safetensors")
    with pytest.raises(BundleError, match="checksum differs"):
        Explainer.from_bundle(mixed)
    (mixed / "model.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Explainer.from_bundle(mixed)


def test_infer_cli_explains_good_files_and_reports_the_broken_one(run_dir, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 23, 3), dtype=np.uint8)).save(photos / "odd_size.jpg")
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8), mode="L").save(photos / "grey.png")
    Image.fromarray(rng.integers(0, 255, (20, 20, 4), dtype=np.uint8), mode="RGBA").save(photos / "alpha.png")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).convert("P").save(photos / "palette.bmp")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out"
    code = infer_main(["--run", str(run_dir), str(photos), "--out", str(out), "--batch-size", "2", "--branches"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    rows = {row["file"].rsplit("/", 1)[-1]: row for row in csv.DictReader((out / "summary.csv").open())}
    assert rows["broken.jpg"]["status"] == "failed" and "unreadable" in rows["broken.jpg"]["note"]
    for name in ("odd_size.jpg", "grey.png", "alpha.png", "palette.bmp"):
        stem = name.split(".")[0]
        assert rows[name]["status"] == "ok" and rows[name]["predicted_class"] in ("square", "disk", "triangle")
        assert Image.open(out / f"{stem}.png").size[0] > 16
        arrays = np.load(out / f"{stem}.npz")
        assert arrays["distinct"].shape == (3, 16, 16) and arrays["branches"].shape[0] == 5
    assert "grey image replicated" in rows["grey.png"]["note"] and "alpha" in rows["alpha.png"]["note"]


def test_infer_cli_missing_run_is_one_sentence(tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    code = infer_main(["--run", str(tmp_path / "none"), str(image), "--out", str(tmp_path / "out")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
