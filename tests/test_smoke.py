"""train.py --smoke: the smallest budgets on top of a data set's file, under the command line; and
the too-small-for-a-batch error as the user sees it. The end-to-end smoke run is in
tests/test_ddp_pipeline.py (under DDP)."""

from dxai.cli.train import main, overrides_from, parse_args, smoke_overrides
from dxai.config import load_config


def config_of(*argv: str):
    args = parse_args(list(argv))
    return load_config(args.dataset, overrides_from(args))


def test_smoke_keeps_the_data_sets_networks_and_shrinks_every_budget():
    plain, smoke = config_of("--dataset", "afhq"), config_of("--dataset", "afhq", "--smoke")
    assert smoke.decomposition.base_channels == plain.decomposition.base_channels
    assert smoke.data.img_size == plain.data.img_size == 256 and smoke.cartoonx.levels == plain.cartoonx.levels
    assert smoke.run.run_name == "smoke"
    budgets = ["classifier.max_steps", "decomposition.max_steps", "masks.max_steps", "masks.eval_reference_steps",
               "masks.eval_refine_steps", "masks.eval_images", "evaluation.num_images", "evaluation.rd_images",
               "evaluation.rd_steps", "evaluation.path_steps", "data.batch_size"]
    for key in budgets:
        section, name = key.split(".")
        small, default = getattr(getattr(smoke, section), name), getattr(getattr(plain, section), name)
        assert 1 <= small <= 4 and small < default, key
    assert smoke.decomposition.batch_size is None and smoke.masks.batch_size is None  # data.batch_size
    assert all("=" in item for item in smoke_overrides())


def test_flags_and_overrides_win_over_smoke():
    cfg = config_of("--dataset", "afhq", "--smoke", "--batch-size", "2", "--max-steps", "3", "--run-name", "mine",
                    "masks.eval_reference_steps=9", "decomposition.batch_size=3")
    assert cfg.data.batch_size == 2 and cfg.masks.batch_size is None and cfg.decomposition.batch_size == 3
    assert cfg.classifier.max_steps == cfg.decomposition.max_steps == cfg.masks.max_steps == 3
    assert cfg.masks.eval_reference_steps == 9
    args = parse_args(["--smoke", "--run-name", "mine"])
    assert overrides_from(args).index('run.run_name="smoke"') == 0  # the literal --run-name is set after


def test_a_split_too_small_for_the_batch_stops_with_the_stage_the_counts_and_the_fix(tmp_path, capsys):
    from test_ddp_pipeline import TINY, make_tree

    tree = make_tree(tmp_path / "data", train=3, val=2)
    code = main(["--dataset", "folder", "--data-root", str(tree), "--smoke", "--runs-dir", str(tmp_path / "runs"),
                 "--stage", "classifier", "--batch-size", "8", *TINY])
    error = capsys.readouterr().err
    assert code == 2
    assert "classifier stage trains on batches of 8" in error and "has 6 images" in error
    assert "--batch-size 6" in error and "Traceback" not in error


def test_a_small_evaluation_takes_the_classes_of_a_folder_tree_in_turn(tmp_path):
    from test_ddp_pipeline import make_tree

    from dxai.data.folders import FolderDataset
    from dxai.stages.evaluate import classes_in_turn

    val = FolderDataset(make_tree(tmp_path / "data", train=1, val=3), "val", img_size=16)
    spread = classes_in_turn(val)
    assert [spread[index]["label"] for index in range(len(spread))] == [0, 1, 0, 1, 0, 1]
    synthetic = object()  # any data set without class-sorted samples stays as it is
    assert classes_in_turn(synthetic) is synthetic
