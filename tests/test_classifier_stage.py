import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from dxai.cli.train import main
from dxai.config import load_config
from dxai.errors import DXAIError
from dxai.nets.classifier import build_classifier
from dxai.pipeline import run_pipeline
from dxai.run_folder import RunFolderError, load_classifier
from dxai.stages.classifier import is_done
from dxai.training.classifier import neutrality_loss


def test_classifier_stage_end_to_end_writes_checkpoint_and_metrics(tiny_overrides):
    cfg = load_config("synthetic", tiny_overrides)
    run_dir = run_pipeline(cfg, "classifier")
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    assert 0 <= metrics["classifier"]["val_accuracy"] <= 1
    assert (run_dir / "checkpoints" / "classifier" / "last.ckpt").is_file()
    assert (run_dir / "config.yaml").is_file()
    assert is_done(cfg, run_dir)
    model = load_classifier(cfg, run_dir)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 3)
    assert not any(p.requires_grad for p in model.parameters())


def test_same_seed_same_classifier_other_seed_another(tiny_overrides):
    def trained(name: str, seed: int) -> torch.Tensor:
        cfg = load_config("synthetic", tiny_overrides + [f"run.run_name={name}", f"trainer.seed={seed}"])
        return load_classifier(cfg, run_pipeline(cfg, "classifier")).head[-1].weight

    assert torch.equal(trained("first", 0), trained("again", 0))
    assert not torch.equal(trained("first", 0), trained("other", 1))


def test_user_weights_are_adopted_and_mismatches_are_clear(tiny_overrides, tmp_path):
    mine = build_classifier("simple", 3, 3, 16)
    weights = tmp_path / "mine.safetensors"
    save_file(mine.state_dict(), str(weights))
    cfg = load_config("synthetic", tiny_overrides + [f"classifier.weights={weights}"])
    run_dir = run_pipeline(cfg, "classifier")
    adopted = load_classifier(cfg, run_dir)
    assert torch.equal(adopted.head[-1].weight, mine.head[-1].weight)

    wrong = tmp_path / "four_classes.safetensors"
    save_file(build_classifier("simple", 4, 3, 16).state_dict(), str(wrong))
    cfg = load_config("synthetic", tiny_overrides + [f"classifier.weights={wrong}", "run.run_name=wrong"])
    with pytest.raises(RunFolderError, match="another class count"):
        run_pipeline(cfg, "classifier")
    cfg = load_config("synthetic", tiny_overrides + [f"classifier.weights={weights}", "classifier.arch=resnet18",
                                                    "run.run_name=arch"])
    with pytest.raises(RunFolderError, match="does not fit a resnet18"):
        run_pipeline(cfg, "classifier")


def test_wandb_logger_writes_an_offline_run(tiny_overrides, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = load_config("synthetic", tiny_overrides + ["trainer.logger=wandb"])
    run_dir = run_pipeline(cfg, "classifier")
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert runs and any(f.suffix == ".wandb" for f in runs[0].iterdir())


def test_cli_reports_missing_weights_in_one_line(tiny_overrides, capsys):
    code = main(["--stage", "classifier", "--classifier-weights", "/nonexistent.pt", *tiny_overrides])
    assert code == 2 and "do not exist" in capsys.readouterr().err


def test_neutrality_loss_is_smallest_on_uniform_predictions():
    uniform = neutrality_loss(torch.zeros(4, 3))
    assert uniform.item() == pytest.approx(math.log(3))
    assert neutrality_loss(torch.tensor([[3.0, 0.0, 0.0]])).item() > uniform.item() + 0.5


def test_neutral_background_weight_makes_the_classifier_neutral_on_backgrounds(tiny_overrides):
    def background_max_prob(name: str, weight: float) -> float:
        cfg = load_config("synthetic", tiny_overrides + [
            f"run.run_name={name}", "classifier.max_steps=150", "classifier.val_every_steps=150", "classifier.lr=3e-3",
            f"classifier.neutral_background_weight={weight}"])
        metrics = json.loads((run_pipeline(cfg, "classifier") / "report" / "metrics.json").read_text())
        return metrics["classifier"]["background_max_prob"]

    assert background_max_prob("neutral", 5.0) < background_max_prob("plain", 0.0) - 0.05


def test_neutral_background_weight_on_folder_data_is_a_clear_error(tiny_overrides, tmp_path):
    cfg = load_config("folder", tiny_overrides + [f"data.root={tmp_path}", "classifier.neutral_background_weight=1"])
    with pytest.raises(DXAIError, match="synthetic"):
        run_pipeline(cfg, "classifier")


def test_independent_classifiers_trained_beside_the_explained_one_are_those_trained_after_it(tiny_overrides):
    from dxai.run_folder import independent_classifier_path

    def trained(name: str, threads: str) -> tuple:
        cfg = load_config("synthetic", tiny_overrides + [f"run.run_name={name}", "classifier.independent=2",
                                                         f"trainer.cpu_threads={threads}"])
        run_dir = run_pipeline(cfg, "classifier")
        metrics = json.loads((run_dir / "report" / "metrics.json").read_text())["classifier"]
        weights = [load_file(str(independent_classifier_path(run_dir, k))) for k in range(2)]
        return run_dir, metrics, weights

    beside, beside_metrics, beside_weights = trained("beside", "1")  # one thread each: a background process
    after, after_metrics, after_weights = trained("after", "null")  # no core left idle: one after the other
    assert beside_metrics["independent"] == after_metrics["independent"]
    assert all(torch.equal(a[key], b[key]) for a, b in zip(beside_weights, after_weights) for key in a)
    assert (beside / "csv" / "classifier_independent_0" / "metrics.csv").is_file()  # its training log is kept
