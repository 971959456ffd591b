import json

import pytest
import torch
from safetensors.torch import save_file

from dxai.config import load_config
from dxai.nets.classifier import build_classifier
from dxai.pipeline import run_pipeline
from dxai.training.classifier import ClassifierError, classifier_path, is_done, load_classifier
from train import main


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
    with pytest.raises(ClassifierError, match="another class count"):
        run_pipeline(cfg, "classifier")
    cfg = load_config("synthetic", tiny_overrides + [f"classifier.weights={weights}", "classifier.arch=resnet18",
                                                    "run.run_name=arch"])
    with pytest.raises(ClassifierError, match="does not fit a resnet18"):
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
