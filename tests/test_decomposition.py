"""The decomposition stage end to end on tiny settings: results, resume, DDP, clear errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from dxai.cli.train import main
from dxai.config import load_config
from dxai.errors import DXAIError
from dxai.nets.classifier import build_classifier
from dxai.nets.generator import decompose
from dxai.nets.mapping import class_styles
from dxai.panels import GRID_MIN_TILE
from dxai.pipeline import run_pipeline
from dxai.run_folder import checkpoint_dir, classifier_path, load_decomposition
from dxai.stages import decomposition

REPO = Path(__file__).resolve().parent.parent
TINY_DECOMPOSITION = [
    "decomposition.num_branches=3", "decomposition.base_channels=4", "decomposition.max_channels=8",
    "decomposition.num_bottleneck=1", "decomposition.disc_base_channels=4", "decomposition.disc_max_channels=8",
    "decomposition.mapping_hidden=16", "decomposition.style_dim=8", "decomposition.batch_size=4",
    "decomposition.num_panel_images=2", "decomposition.val_every_steps=2", "decomposition.image_every_steps=2",
]


@pytest.fixture
def tiny(tiny_overrides) -> list[str]:
    """Tiny overrides for both stages, with the tiny classifier already trained."""
    overrides = tiny_overrides + TINY_DECOMPOSITION
    run_pipeline(load_config("synthetic", overrides), "classifier")
    return overrides


def checkpoint_step(run_dir: Path) -> int:
    path = checkpoint_dir(run_dir, "decomposition") / "last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


@pytest.mark.parametrize("objective", ["paper", "neutral", "swap"])
def test_stage_writes_weights_metrics_panels_and_a_classifier_free_checkpoint(tiny, objective):
    cfg = load_config("synthetic", tiny + ["decomposition.max_steps=4", f"decomposition.objective={objective}"])
    run_dir = run_pipeline(cfg, "decomposition")
    section = json.loads((run_dir / "report" / "metrics.json").read_text())["decomposition"]
    for key in ("recon_psnr", "beta_auc", "neutral_auc", "distinct_energy", "random_beta_auc", "agnostic_max_prob",
                "gt_distinct_corr", "gt_distinct_error", "gt_energy_inside", "gt_agnostic_psnr",
                "gt_background_max_prob", "gt_agnostic_corr"):
        assert isinstance(section[key], float), key
    assert len(section["gt_distinct_corr_by_class"]) == 3
    assert all(corr is None or -1 <= corr <= 1 for corr in section["gt_distinct_corr_by_class"])
    assert section["iterations"] == 4 and len(section["beta_accuracy"]) == 11
    assert decomposition.is_done(cfg, run_dir)
    assert sorted(p.name for p in checkpoint_dir(run_dir, "decomposition").iterdir()) == [
        "discriminator.safetensors", "generator_ema.safetensors", "last.ckpt", "mapping_ema.safetensors"]
    checkpoint = torch.load(checkpoint_dir(run_dir, "decomposition") / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 4 * decomposition.OPTIMIZER_STEPS_PER_ITERATION
    assert not any(k.startswith("classifier.") for k in checkpoint["state_dict"])
    assert any(k.startswith("generator_ema.") for k in checkpoint["state_dict"])
    panel = Image.open(run_dir / "report" / "panels" / "decomposition_panel_iteration000004.png")
    columns = 4 + cfg.decomposition.num_branches  # x | x_hat | distinct | agnostic | each branch
    assert panel.size[0] >= columns * GRID_MIN_TILE

    generator, mapping = load_decomposition(cfg, run_dir)
    styles = class_styles(mapping, 3)
    images = torch.randn(2, 3, 16, 16)
    branches = decompose(generator, styles, images, torch.tensor([0, 2]))
    assert branches.shape == (2, 3, 3, 16, 16)
    assert torch.equal(branches, decompose(generator, class_styles(mapping, 3), images, torch.tensor([0, 2])))


def test_interrupted_run_resumes_from_its_last_checkpoint(tiny, monkeypatch):
    """SIGTERM a run once it has checkpointed, then resume: it continues from the checkpoint."""
    # ModelCheckpoint saves every val_every_steps trainer steps, i.e. here after every iteration.
    overrides = tiny + ["decomposition.max_steps=1000", "decomposition.val_every_steps=2"]
    process = subprocess.Popen([sys.executable, "train.py", "--stage", "decomposition", *overrides], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_dir = load_config("synthetic", overrides).run_dir
    last = checkpoint_dir(run_dir, "decomposition") / "last.ckpt"
    deadline = time.monotonic() + 60
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    interrupted_at = checkpoint_step(run_dir)
    assert interrupted_at > 0 and interrupted_at % decomposition.OPTIMIZER_STEPS_PER_ITERATION == 0
    assert not decomposition.is_done(load_config("synthetic", overrides), run_dir)

    calls = []
    training_step = decomposition.DecompositionModule.training_step

    def counted_training_step(self, batch, batch_idx):
        calls.append(self.global_step)
        return training_step(self, batch, batch_idx)

    monkeypatch.setattr(decomposition.DecompositionModule, "training_step", counted_training_step)
    done_iterations = interrupted_at // 2
    final = load_config("synthetic", overrides + [f"decomposition.max_steps={done_iterations + 2}"])
    run_pipeline(final, "decomposition")
    assert calls == [interrupted_at, interrupted_at + 2]
    assert checkpoint_step(run_dir) == 2 * (done_iterations + 2)
    assert json.loads((run_dir / "report" / "metrics.json").read_text())["decomposition"]["iterations"] == (
        done_iterations + 2)


HASH_DRIVER = """
import hashlib, os, sys
sys.path.insert(0, {repo!r})
from dxai.training import decomposition
from dxai.run_folder import classifier_path
import train

def dump_hash(self):
    digest = hashlib.sha256()
    for name, tensor in sorted(self.state_dict().items()):
        if not name.startswith("classifier."):
            digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    with open(os.path.join({out!r}, f"rank{{self.global_rank}}.txt"), "w") as handle:
        handle.write(f"{{self.global_step}} {{digest.hexdigest()}}")

decomposition.DecompositionModule.on_train_end = dump_hash
sys.exit(train.main())
"""


def test_two_process_ddp_ends_with_identical_weights_and_one_checkpoint_set(tiny, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(HASH_DRIVER.format(repo=str(REPO), out=str(tmp_path)))
    overrides = tiny + ["decomposition.max_steps=3", "decomposition.val_every_steps=3"]
    result = subprocess.run([sys.executable, str(driver), "--stage", "decomposition", "--devices", "2",
                             "--strategy", "ddp", *overrides], cwd=REPO, capture_output=True, text=True,
                            timeout=180, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-3000:]
    hashes = [(tmp_path / f"rank{rank}.txt").read_text().split() for rank in (0, 1)]
    assert hashes[0] == hashes[1] and hashes[0][0] == "6"
    run_dir = load_config("synthetic", overrides).run_dir
    assert sorted(p.name for p in checkpoint_dir(run_dir, "decomposition").iterdir()) == [
        "discriminator.safetensors", "generator_ema.safetensors", "last.ckpt", "mapping_ema.safetensors"]
    assert json.loads((run_dir / "report" / "metrics.json").read_text())["decomposition"]["iterations"] == 3


def test_non_finite_loss_stops_with_the_term_and_keeps_the_last_good_checkpoint(tiny, capsys):
    run_dir = run_pipeline(load_config("synthetic", tiny + ["decomposition.max_steps=2"]), "decomposition")
    assert checkpoint_step(run_dir) == 4
    code = main(["--stage", "decomposition", *tiny, "decomposition.max_steps=4", "decomposition.lambda_dr=nan"])
    error = capsys.readouterr().err
    assert code == 2 and "iteration 3" in error and "'dr'" in error and "last.ckpt" in error
    assert checkpoint_step(run_dir) == 4


def with_classifier_of(tiny: list[str], run_name: str) -> list[str]:
    """Overrides for a new run folder that holds a copy of the tiny run's classifier."""
    source = classifier_path(load_config("synthetic", tiny).run_dir)
    overrides = tiny + [f"run.run_name={run_name}"]
    target = classifier_path(load_config("synthetic", overrides).run_dir)
    target.parent.mkdir(parents=True)
    shutil.copy(source, target)
    return overrides


def test_bad_settings_are_clear_errors(tiny, capsys):
    code = main(["--stage", "decomposition", *with_classifier_of(tiny, "deep"), "decomposition.num_downsample=4"])
    assert code == 2 and "cannot take 16 px images" in capsys.readouterr().err

    code = main(["--stage", "decomposition", *with_classifier_of(tiny, "two"), "data.num_classes=2"])
    assert code == 2 and "another class count" in capsys.readouterr().err
    with pytest.raises(DXAIError, match="outputs 4 classes"):
        decomposition.check_classifier(build_classifier("simple", 4, 3, 16), load_config("synthetic", tiny),
                                       ["a", "b", "c"])


def test_ddp_is_told_about_the_unused_parameters_of_each_backward():
    trainer = load_config("synthetic").trainer
    assert decomposition.gan_strategy(trainer) == "auto"
    for strategy, expected in [("ddp", "ddp_find_unused_parameters_true"),
                               ("ddp_spawn", "ddp_spawn_find_unused_parameters_true"),
                               ("ddp_find_unused_parameters_true", "ddp_find_unused_parameters_true")]:
        trainer.strategy = strategy
        assert decomposition.gan_strategy(trainer) == expected
    trainer.strategy, trainer.devices = "auto", "2"
    assert decomposition.gan_strategy(trainer) == "ddp_find_unused_parameters_true"


def test_the_kept_weights_are_those_of_the_most_neutral_validation_for_the_independent_classifiers(tiny):
    cfg = load_config("synthetic", tiny + ["decomposition.max_steps=6", "decomposition.select_min_psnr=-100",
                                           "decomposition.select_tolerance=0"])
    run_dir = run_pipeline(cfg, "decomposition")
    section = json.loads((run_dir / "report" / "metrics.json").read_text())["decomposition"]
    history = section["selection_history"]
    assert [entry["iteration"] for entry in history] == [2, 4, 6]
    best = min(history, key=lambda entry: entry["transfer_max_prob"])
    assert section["selected_iteration"] == best["iteration"]
    assert round(section["transfer_max_prob"], 4) == best["transfer_max_prob"]  # validated again: the kept weights
    for key in ("transfer_true_prob", "transfer_argmax_true", "transfer_residual_true_prob",
                "transfer_background_max_prob", "agnostic_true_prob"):
        assert 0 <= section[key] <= 1, key
    assert len(section["transfer_by_classifier"]["true_prob"]) == cfg.classifier.independent
    kept = load_decomposition(cfg, run_dir)[0].state_dict()
    selected = torch.load(checkpoint_dir(run_dir, "decomposition") / "last.ckpt", weights_only=False)["dxai_selection"]
    assert all(torch.equal(kept[key], selected["state"][f"generator_ema.{key}"]) for key in kept)


def test_a_tie_in_neutrality_goes_to_the_better_reconstruction():
    from dxai.training.decomposition import DecompositionModule

    cfg = load_config("synthetic", TINY_DECOMPOSITION + ["data.img_size=16", "decomposition.select_min_psnr=30",
                                                         "decomposition.select_tolerance=0.005"])
    module = DecompositionModule(cfg, build_classifier("simple", 3, 3, 16))

    def offer(score, psnr):
        candidate = {"eligible": psnr >= 30, "score": score, "psnr": psnr}
        replaced = module._replaces_kept(candidate)
        if replaced:
            module.selection["kept"] = candidate
        return replaced

    assert offer(0.40, 26.0)             # nothing kept yet
    assert offer(0.45, 27.0)             # none eligible: the better reconstruction
    assert offer(0.36, 31.0)             # the first eligible one
    assert not offer(0.50, 40.0)         # less neutral by more than the tolerance
    assert offer(0.3630, 35.0)           # as neutral within the tolerance, better reconstructed
    assert not offer(0.3601, 34.0)       # more neutral by less than the tolerance, worse reconstructed
    assert offer(0.35, 33.0)             # more neutral by more than the tolerance
    assert not offer(0.10, 29.0)         # not eligible once one is

    old_checkpoint = {"state_dict": {}, "dxai_selection": {  # written before select_tolerance existed
        "history": [{"iteration": 600, "eligible": True, "recon_psnr": 34.2}], "iteration": 600,
        "rank": [0, 0.376], "state": None}}
    module.on_load_checkpoint(old_checkpoint)
    assert module.selection["kept"] == {"eligible": True, "score": 0.376, "psnr": 34.2}
    assert not offer(0.379, 34.0) and offer(0.379, 35.0)


def test_without_independent_classifiers_the_last_weights_are_kept(tiny):
    cfg = load_config("synthetic", tiny + ["decomposition.max_steps=2", "classifier.independent=0"])
    section = decomposition.run(cfg, run_pipeline(cfg, "classifier"))
    assert section["selected_iteration"] == 2 and section["selection"].startswith("last")
    assert "transfer_max_prob" not in section


def test_swap_partners_are_of_another_class_and_missing_only_when_the_batch_has_one_class():
    from dxai.training.decomposition import class_swap, swap_partners

    labels = torch.tensor([0, 0, 1, 2, 1])
    partner = swap_partners(labels)
    assert partner.tolist() == [2, 2, 3, 4, 0]
    assert swap_partners(torch.tensor([1, 1, 1])).tolist() == [-1, -1, -1]
    agnostic, distinct = torch.zeros(5, 3, 4, 4), torch.arange(5.0).view(5, 1, 1, 1).expand(5, 3, 4, 4)
    images, swapped = class_swap(agnostic, distinct, labels, partner)
    assert swapped.tolist() == [1, 1, 2, 1, 0] and images[:, 0, 0, 0].tolist() == [2, 2, 3, 4, 0]


def test_lazy_r1_is_skipped_between_its_iterations_and_weighted_by_their_count(monkeypatch):
    from dxai.training.decomposition import DecompositionModule

    cfg = load_config("synthetic", TINY_DECOMPOSITION + ["data.img_size=16", "decomposition.r1_every=4"])
    torch.manual_seed(0)
    module = DecompositionModule(cfg, build_classifier("simple", 3, 3, 16))
    monkeypatch.setattr(module, "_weighted_total", lambda terms, weights, phase: sum(
        weights[name] * value for name, value in terms.items()))
    x, fakes = torch.rand(4, 3, 16, 16), torch.rand(6, 3, 16, 16)
    y, fake_labels = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 2, 0, 1, 2])
    terms = {}
    for iteration in (4, 5):
        monkeypatch.setattr(DecompositionModule, "iteration", property(lambda self, i=iteration: i))
        terms[iteration] = module._discriminator_terms(x, y, fakes, fake_labels)
    with_r1, without = terms[4], terms[5]
    assert "r1" in with_r1 and "r1" not in without and float(with_r1["r1"]) > 0
    for name in ("real", "fake", "kld"):  # one batch through the critic gives the same terms as two
        assert torch.allclose(with_r1[name], without[name], atol=1e-6), name
    assert torch.allclose(with_r1["total"] - without["total"], 4 * cfg.decomposition.lambda_r1 * with_r1["r1"],
                          atol=1e-5)


def test_null_class_pushes_its_distinct_parts_to_zero_and_the_agnostic_blend_to_it():
    from dxai.training.decomposition import DecompositionModule
    from dxai.training.losses import null_distinct_loss

    distinct = torch.ones(3, 3, 4, 4)
    assert float(null_distinct_loss(distinct, torch.tensor([True, False, False]))) == 2.0  # |1| + 1^2
    assert float(null_distinct_loss(distinct, torch.tensor([False, False, False]))) == 0.0

    cfg = load_config("synthetic", TINY_DECOMPOSITION + ["data.img_size=16", "decomposition.objective=neutral"])
    module = DecompositionModule(cfg, build_classifier("simple", 3, 3, 16))
    y = torch.tensor([0, 1, 2])
    logits = torch.cat([torch.eye(3) * 5, torch.tensor([[0.0, 0, 0], [0, 0, 0], [0, 0, 0]])])  # x_hat^y, x_hat^y~
    uniform = float(module._class_term(logits, y, y))
    cfg.decomposition.null_class = 2
    null = float(module._class_term(logits, y, y))
    assert null == pytest.approx(uniform + torch.log(torch.tensor(3.0)).item(), abs=1e-5)  # CE(uniform, 2) = log 3
    logits[3:, 2] = 20.0  # x_hat^y~ read as the null class: its term vanishes
    assert float(module._class_term(logits, y, y)) == pytest.approx(uniform, abs=1e-5)


def test_noise_configuration_has_a_null_class_and_a_plain_classifier():
    from dxai.config import validate

    cfg = load_config("noise")
    assert (cfg.data.family, cfg.data.num_classes, cfg.decomposition.null_class) == ("noise", 2, 0)
    validate(cfg)
    with pytest.raises(DXAIError, match="neutral_background_weight=0"):
        validate(load_config("noise", ["classifier.neutral_background_weight=1"]))
    with pytest.raises(DXAIError, match="null_class must be a class index"):
        validate(load_config("noise", ["decomposition.null_class=2"]))


def test_with_a_null_class_the_kept_weights_are_those_with_the_emptiest_null_parts(tiny):
    cfg = load_config("synthetic", tiny + ["decomposition.max_steps=4", "decomposition.select_min_psnr=-100",
                                           "decomposition.select_tolerance=0", "decomposition.null_class=0",
                                           "classifier.neutral_background_weight=0"])
    section = json.loads((run_pipeline(cfg, "decomposition") / "report" / "metrics.json").read_text())["decomposition"]
    assert section["selection"].startswith("lowest 1 - transfer_null_prob + null_distinct_energy")
    best = min(section["selection_history"],
               key=lambda entry: 1 - entry["transfer_null_prob"] + entry["null_distinct_energy"])
    assert section["selected_iteration"] == best["iteration"]
    assert 0 <= section["transfer_null_prob"] <= 1 and section["null_distinct_energy"] >= 0


def test_both_cores_are_taken_at_the_fixed_iteration_after_the_background_ends():
    class Process:
        joined = False

        def join(self):
            self.joined = True

    class Module:
        iteration = 0

    process, module, threads = Process(), Module(), torch.get_num_threads()
    callback = decomposition.BothCoresFrom(start=5, threads=1, processes=[process])
    try:
        torch.set_num_threads(2)
        callback.on_train_batch_start(None, module, None, 0)
        assert not process.joined and torch.get_num_threads() == 2
        module.iteration = 5
        callback.on_train_batch_start(None, module, None, 0)
        assert process.joined and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_colors_configuration_judges_random_views_of_the_fakes(tiny, monkeypatch):
    from dxai.training import decomposition as module
    from dxai.training.views import random_views

    cfg = load_config("colors")
    assert (cfg.data.family, cfg.decomposition.objective) == ("colors", "neutral")
    settings = (cfg.decomposition.view_shift, cfg.decomposition.view_flip, cfg.decomposition.view_noise)
    assert settings[0] > 0 and settings[2] > 0
    seen = []

    def spy(images, shift, flip, noise):
        views = random_views(images, shift, flip, noise)
        seen.append(((shift, flip, noise), bool((views != images).any())))
        return views

    monkeypatch.setattr(module, "random_views", spy)
    views = [f"decomposition.view_shift={settings[0]}", f"decomposition.view_flip={settings[1]}",
             f"decomposition.view_noise={settings[2]}"]
    run_pipeline(load_config("synthetic", tiny + ["decomposition.max_steps=2"] + views), "decomposition")
    assert seen and all(args == settings and changed for args, changed in seen)
    from dxai.config import ConfigError, validate

    for bad, message in (("decomposition.view_shift=-1", "view_shift"),
                         ("decomposition.view_shift=32", "below the image"),
                         ("decomposition.view_noise=-0.1", "view_noise")):
        with pytest.raises(ConfigError, match=message):
            validate(load_config("colors", [bad]))
