import pytest

from dxai.cli.train import main, overrides_from, parse_args
from dxai.config import ConfigError, load_config, read_config, save_config


def test_dataset_configs_load_and_overrides_apply():
    cfg = load_config("afhq", ["decomposition.lr=2e-4", "data.img_size=128"])
    assert cfg.data.img_size == 128 and cfg.decomposition.lr == 2e-4
    assert cfg.data.class_names == ["cat", "dog", "wild"]
    assert load_config("celeba_hq").data.num_classes == 2


def test_unknown_dataset_and_key_are_clear_errors():
    with pytest.raises(ConfigError, match="choose one of"):
        load_config("imagenet")
    with pytest.raises(ConfigError, match="no_such_key"):
        load_config("synthetic", ["data.no_such_key=1"])


def test_flags_become_overrides():
    args = parse_args(["--stage", "classifier", "--max-steps", "7", "--img-size", "16", "--logger", "wandb",
                       "classifier.lr=0.1"])
    overrides = overrides_from(args)
    assert "classifier.max_steps=7" in overrides and "data.img_size=16" in overrides
    assert "trainer.logger=wandb" in overrides and overrides[-1] == "classifier.lr=0.1"


def test_config_round_trip(tmp_path):
    cfg = load_config("synthetic", ["run.run_name=x"])
    save_config(cfg, tmp_path / "config.yaml")
    assert read_config(tmp_path / "config.yaml") == cfg


def test_missing_data_root_is_one_sentence_not_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DXAI_DATA", raising=False)
    code = main(["--dataset", "afhq", "--stage", "classifier", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--data-root" in err and "Traceback" not in err
