"""Hostile inputs and faults (issue 19): every failure is one sentence naming the file, flag or folder
and the fix, nothing written before is lost, and bad images among good ones are listed and skipped.

The numbers in the test names are the issue's items. A bundle of untrained networks stands in for a
trained run where only the file handling matters, so that these tests stay fast.
"""

import csv
import errno
import json
import os
import shutil
import stat
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from dxai.bundle import BundleError, find_bundle, sha256
from dxai.cli.train import apply_literal_flags, main, overrides_from, parse_args
from dxai.config import ConfigError, load_config, save_config, validate
from dxai.errors import DXAIError
from dxai.explain.inputs import InputError
from dxai.images import read_image
from dxai.inference import Explainer, check_device
from dxai.io import atomic_write_bytes, atomic_write_text, os_error_sentence, read_metrics
from dxai.models import build_configured_classifier, build_generator, build_mapping, build_mask_predictor
from dxai.pipeline import check_same_shape, clean_leftovers, run_pipeline
from dxai.run_folder import (
    RunFolderError,
    classifier_path,
    decomposition_path,
    load_classifier,
    predictor_path,
    read_state_dict,
    resume_path,
    save_weights,
)
from dxai.stages import classifier as classifier_stage
from dxai.stages.export import write_bundle
from dxai.training import common
from dxai.training.common import AtomicCheckpointIO
from infer import main as infer_main

SMALL = ["data.img_size=16", "trainer.progress_bar=false", "trainer.accelerator=cpu",
         "decomposition.base_channels=4", "decomposition.max_channels=8", "decomposition.disc_base_channels=4",
         "decomposition.disc_max_channels=8", "decomposition.style_dim=8", "decomposition.mapping_hidden=16",
         "masks.base_channels=4", "masks.max_channels=8"]
CLASSES = ["square", "disk", "triangle"]


def one_sentence(err: str) -> bool:
    return err.startswith("error: ") and "Traceback" not in err and err.strip().count("\n") == 0


@pytest.fixture(scope="module")
def bundle_run(tmp_path_factory):
    """A run folder with untrained networks and their exported bundle (no training: seconds)."""
    root = tmp_path_factory.mktemp("runs")
    cfg = load_config("synthetic", [f"run.runs_dir={root}", "run.run_name=untrained", *SMALL])
    run_dir = cfg.run_dir
    torch.manual_seed(0)
    generator = build_generator(cfg)
    save_weights(build_configured_classifier(cfg), classifier_path(run_dir))
    save_weights(generator, decomposition_path(run_dir, "generator_ema"))
    save_weights(build_mapping(cfg, generator), decomposition_path(run_dir, "mapping_ema"))
    save_weights(build_mask_predictor(cfg), predictor_path(run_dir))
    write_bundle(cfg, run_dir, CLASSES)
    return run_dir


@pytest.fixture
def bundle_copy(bundle_run, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(bundle_run / "model", copy)
    return copy


def classifier_overrides(tmp_path, steps: int) -> list[str]:
    return [f"run.runs_dir={tmp_path / 'runs'}", "run.run_name=tiny", "data.img_size=16", "data.train_size=64",
            "data.val_size=16", "data.batch_size=16", "classifier.arch=simple", f"classifier.max_steps={steps}",
            "classifier.val_every_steps=4", "trainer.progress_bar=false", "trainer.accelerator=cpu"]


def checkpoint_step(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


# 1 -------------------------------------------------------------------------------------------------

def test_1_atomic_write_under_enospc_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 4}, target)
    before = target.read_bytes()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("dxai.io.os.fsync", full_disk)
    with pytest.raises(OSError) as caught:
        AtomicCheckpointIO().save_checkpoint({"global_step": 8, "big": torch.zeros(1000)}, target)
    monkeypatch.undo()
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["last.ckpt"]
    assert "free some space and run the same command again" in os_error_sentence(caught.value)
    assert AtomicCheckpointIO().load_checkpoint(target)["global_step"] == 4


def test_1_disk_full_during_training_is_a_sentence_and_the_rerun_resumes(tmp_path, capsys, monkeypatch):
    overrides = classifier_overrides(tmp_path, steps=8)
    real_write, calls = common.atomic_write, []

    def second_checkpoint_hits_a_full_disk(path, write):
        calls.append(path)
        if len(calls) < 2:
            return real_write(path, write)

        def half_then_enospc(handle):
            handle.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")  # as write(2) reports it: no file name
        return real_write(path, half_then_enospc)

    monkeypatch.setattr(common, "atomic_write", second_checkpoint_hits_a_full_disk)
    code = main(["--stage", "classifier", *overrides])
    err = capsys.readouterr().err
    assert code == 2 and one_sentence(err) and "No space left" in err and "last.ckpt" in err
    last = tmp_path / "runs" / "synthetic" / "tiny" / "checkpoints" / "classifier" / "last.ckpt"
    assert checkpoint_step(last) == 4 and not list(last.parent.glob(".*.tmp"))

    monkeypatch.undo()
    resumed = []
    real_resume = classifier_stage.resume_path
    monkeypatch.setattr(classifier_stage, "resume_path", lambda *a: resumed.append(real_resume(*a)) or resumed[-1])
    assert main(["--stage", "classifier", *overrides]) == 0
    assert resumed[0] == str(last) and checkpoint_step(last) == 8  # then the independent classifiers' fresh starts
    assert resumed[1:] == [None] * (len(resumed) - 1)
    assert read_metrics(last.parents[2])["classifier"]["steps"] == 8


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_1_a_corrupt_last_ckpt_is_set_aside_and_the_stage_restarts(tmp_path, damage, caplog):
    folder = tmp_path / "checkpoints" / "masks"
    folder.mkdir(parents=True)
    last = folder / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 3, "w": torch.arange(5000.0)}, last)
    assert resume_path(tmp_path, "masks") == str(last)
    whole = last.read_bytes()
    last.write_bytes(b"" if damage == "empty" else whole[: len(whole) // 2])
    with caplog.at_level("WARNING"):
        assert resume_path(tmp_path, "masks") is None
    assert not last.exists() and (folder / "last.ckpt.corrupt").is_file()
    assert "last.ckpt.corrupt" in caplog.text and "from scratch" in caplog.text


def test_1_an_unreadable_checkpoint_given_to_lightning_is_a_sentence(tmp_path):
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DXAIError, match="last.ckpt is not a readable checkpoint.*move it aside"):
        AtomicCheckpointIO().load_checkpoint(bad)


# 2 -------------------------------------------------------------------------------------------------

def test_2_a_classifier_can_be_trained_longer(tmp_path, capsys):
    assert main(["--stage", "classifier", *classifier_overrides(tmp_path, steps=4)]) == 0
    assert main(["--stage", "classifier", *classifier_overrides(tmp_path, steps=8)]) == 0, capsys.readouterr().err
    run_dir = tmp_path / "runs" / "synthetic" / "tiny"
    assert read_metrics(run_dir)["classifier"]["steps"] == 8


# 3 -------------------------------------------------------------------------------------------------

def test_3_a_run_folder_of_another_data_root_is_refused(tmp_path):
    base = [f"run.runs_dir={tmp_path}", "run.run_name=r"]
    cfg = load_config("synthetic", base + [f"data.root={tmp_path / 'scans'}"])
    cfg.run_dir.mkdir(parents=True)
    save_config(cfg, cfg.run_dir / "config.yaml")
    check_same_shape(load_config("synthetic", base + [f"data.root={tmp_path / 'scans'}/"]), cfg.run_dir)
    other = load_config("synthetic", base + [f"data.root={tmp_path / 'photos'}"])
    with pytest.raises(DXAIError, match="trained on the data in .*scans.*--run-name.*--data-root"):
        check_same_shape(other, cfg.run_dir)
    assert str(tmp_path / "scans") in (cfg.run_dir / "config.yaml").read_text()


# 5 -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_5_files_and_bundles_get_the_permissions_the_umask_asks_for(bundle_run, tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        AtomicCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
        cfg = load_config("synthetic", [f"run.runs_dir={bundle_run.parent.parent}", "run.run_name=untrained",
                                        *SMALL])
        bundle = write_bundle(cfg, bundle_run, CLASSES)
    finally:
        os.umask(previous)
    for path in (tmp_path / "a.txt", tmp_path / "last.ckpt", bundle / "model.json", bundle / "generator.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o777 & ~umask


# 6 -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["2e7", "007", "true", "null", "1:2"])
def test_6_run_name_is_taken_literally(name):
    args = parse_args(["--run-name", name, "--runs-dir", "007", "--data-root", "2e7"])
    cfg = validate(apply_literal_flags(load_config("synthetic", overrides_from(args)), args))
    assert cfg.run.run_name == name and cfg.run.runs_dir == "007" and cfg.data.root == "2e7"
    assert str(cfg.run_dir) == f"007/synthetic/{name}"


@pytest.mark.parametrize("name", ["${oc.env:HOME}", "../escape", "a/b", "..", ""])
def test_6_run_name_must_be_a_plain_folder_name(tmp_path, capsys, name):
    code = main(["--stage", "classifier", "--runs-dir", str(tmp_path / "runs"), "--run-name", name])
    err = capsys.readouterr().err
    assert code == 2 and one_sentence(err) and "--run-name" in err and "plain folder name" in err
    assert not (tmp_path / "runs").exists()


# 7 -------------------------------------------------------------------------------------------------

def test_7_what_a_killed_run_left_is_cleaned(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".model-abc123").mkdir(parents=True)
    (run_dir / ".model-abc123" / "generator.safetensors").write_bytes(b"x" * 100)
    (run_dir / ".model-old-.model-def").mkdir()
    (run_dir / ".model-old-.model-def" / "model.json").write_text("{}")
    (run_dir / "report").mkdir()
    (run_dir / "report" / ".metrics.json.k3j2.tmp").write_text("{")
    (run_dir / "report" / "metrics.json").write_text("{}")
    (run_dir / "checkpoints" / "classifier").mkdir(parents=True)
    (run_dir / "checkpoints" / "classifier" / ".last.ckpt.x8.tmp").write_bytes(b"PK")
    (run_dir / "checkpoints" / "classifier" / "last.ckpt").write_bytes(b"PK")
    removed = clean_leftovers(run_dir)
    assert len(removed) == 3
    # a kill between the export's two renames: the previous bundle comes back
    assert (run_dir / "model" / "model.json").is_file()
    left = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    assert left == ["checkpoints", "checkpoints/classifier", "checkpoints/classifier/last.ckpt", "model",
                    "model/model.json", "report", "report/metrics.json"]


def test_7_the_pipeline_cleans_before_it_starts(tiny_overrides, monkeypatch):
    cfg = load_config("synthetic", tiny_overrides)
    (cfg.run_dir / "report").mkdir(parents=True)
    stale = cfg.run_dir / "report" / ".metrics.json.abc.tmp"
    stale.write_text("{")
    monkeypatch.setattr("dxai.pipeline.stage_module", lambda name: (_ for _ in ()).throw(DXAIError("stop")))
    with pytest.raises(DXAIError, match="stop"):
        run_pipeline(cfg, "all")
    assert not stale.exists() and (cfg.run_dir / "config.yaml").is_file()


# 9 and 13 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, named", [
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "-4"], "--batch-size"),
    (["--devices", "abc"], "--devices"), (["--devices", "0"], "--devices"), (["--precision", "17"], "--precision"),
    (["--strategy", "foo"], "--strategy"), (["--num-nodes", "0"], "--num-nodes"),
    (["--max-steps", "-5"], "--max-steps"), (["--max-steps", "0"], "--max-steps"),
    (["--stage", "decomposition", "--max-steps", "0"], "--max-steps"),
    (["data.batch_size=0"], "--batch-size"), (["trainer.accelerator=abacus"], "trainer.accelerator"),
    (["--img-size", "33"], "--img-size"),
])
def test_9_13_bad_train_flags_are_one_sentence_before_any_work(tmp_path, capsys, flags, named):
    code = main(["--runs-dir", str(tmp_path / "runs"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and one_sentence(err) and named in err, err
    assert not (tmp_path / "runs").exists()


def test_9_13_bad_train_flags_are_refused_for_the_stages_they_concern():
    validate(load_config("synthetic", ["decomposition.max_steps=0"]), "classifier")
    validate(load_config("synthetic", ["classifier.max_steps=0", "classifier.weights=mine.pt"]), "all")
    with pytest.raises(ConfigError, match="decomposition.max_steps"):
        validate(load_config("synthetic", ["decomposition.max_steps=0"]), "decomposition")
    with pytest.raises(ConfigError, match="decomposition.r1_every"):
        validate(load_config("synthetic", ["decomposition.r1_every=0"]), "decomposition")
    with pytest.raises(ConfigError, match="masks.distill_schedule"):
        validate(load_config("synthetic", ["masks.distill_schedule=fast"]), "masks")
    with pytest.raises(ConfigError, match="masks.unroll_steps"):
        validate(load_config("synthetic", ["masks.unroll_steps=-1"]), "masks")
    with pytest.raises(ConfigError, match="masks.unroll_step_size"):
        validate(load_config("synthetic", ["masks.unroll_steps=3", "masks.unroll_step_size=2"]), "masks")


@pytest.mark.parametrize("flags, named", [
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "-1"], "--batch-size"),
    (["--refine-steps", "-1"], "--refine-steps"), (["--device", "tpu9"], "tpu9"),
    (["--device", "cuda:99"], "cuda:99"),
])
def test_9_13_bad_infer_flags_are_one_sentence(tmp_path, capsys, flags, named):
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    code = infer_main(["--run", str(tmp_path / "nowhere"), str(image), "--out", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and one_sentence(err) and named in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_13_infer_on_cuda_without_a_gpu_is_a_sentence(tmp_path, capsys):
    with pytest.raises(DXAIError, match="no cuda device.*use one of \\['cpu'"):
        check_device("cuda")
    code = infer_main(["--run", str(tmp_path), str(tmp_path), "--device", "cuda"])
    assert code == 2 and one_sentence(capsys.readouterr().err)


def test_13_infer_out_must_be_a_writable_folder(tmp_path, capsys, monkeypatch):
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    a_file = tmp_path / "summary.txt"
    a_file.write_text("mine")
    for out in (a_file, a_file / "sub"):
        assert infer_main(["--run", str(tmp_path), str(image), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert one_sentence(err) and "--out" in err and "not a folder" in err
    assert a_file.read_text() == "mine"

    def read_only(*args, **kwargs):  # root may write anywhere: fake the read-only folder
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("dxai.cli.infer.tempfile.TemporaryFile", read_only)
    assert infer_main(["--run", str(tmp_path), str(image), "--out", str(tmp_path / "ro")]) == 2
    err = capsys.readouterr().err
    assert one_sentence(err) and "--out" in err and "Read-only file system" in err


# 10 ------------------------------------------------------------------------------------------------

def test_10_sixteen_bit_png_is_scaled_not_saturated(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(path)
    notes = []
    pixels = read_image(path, 3, 8, notes)
    assert abs(float(pixels.mean()) - 0.5) < 0.01 and "16-bit grey image scaled to [0, 1]" in notes


# 12 and 17 (symbolic links) ------------------------------------------------------------------------

def test_12_17_a_bomb_and_bad_links_are_listed_and_the_good_image_explained(bundle_run, tmp_path, capsys,
                                                                            monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 100 x 100 image is a bomb: fast
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("1", (100, 100)).save(photos / "bomb.png")
    Image.new("RGB", (16, 16), (200, 10, 10)).save(photos / "ok.png")
    (photos / "dangling.png").symlink_to(tmp_path / "gone.png")
    (photos / "loop.png").symlink_to(photos / "loop.png")
    out = tmp_path / "out"
    code = infer_main(["--run", str(bundle_run), str(photos), "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    rows = {row["file"].rsplit("/", 1)[-1]: row for row in csv.DictReader((out / "summary.csv").open())}
    assert rows["ok.png"]["status"] == "ok" and (out / "ok.png").is_file()
    for name in ("bomb.png", "dangling.png", "loop.png"):
        assert rows[name]["status"] == "failed" and rows[name]["note"], name
    assert "DecompressionBomb" in rows["bomb.png"]["note"]
    assert "1 explained, 3 failed" in captured.out


# 14 ------------------------------------------------------------------------------------------------

def test_14_corrupt_files_inside_a_run_are_sentences(tmp_path):
    base = [f"run.runs_dir={tmp_path}", "run.run_name=r", "classifier.arch=simple", *SMALL]
    cfg = load_config("synthetic", base)
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="config.yaml is not a dxai run configuration"):
        run_pipeline(cfg, "classifier")
    (run_dir / "report").mkdir()
    for content in (b'{"classifier": {"val_acc', b"\xff\xfe garbage", b"[1, 2]"):
        (run_dir / "report" / "metrics.json").write_bytes(content)
        with pytest.raises(DXAIError, match="metrics.json .*move it aside"):
            read_metrics(run_dir)
    save_weights(build_configured_classifier(cfg), classifier_path(run_dir))
    whole = classifier_path(run_dir).read_bytes()
    classifier_path(run_dir).write_bytes(whole[: len(whole) // 2])
    with pytest.raises(RunFolderError, match="classifier.safetensors is not a readable safetensors file.*"
                                             "--stage classifier"):
        load_classifier(cfg, run_dir)


@pytest.mark.parametrize("name, content", [
    ("random.pt", os.urandom(2000)), ("random.safetensors", os.urandom(2000)),
    ("truncated.pt", "truncate"), ("truncated.safetensors", "truncate"),
])
def test_14_bad_classifier_weights_are_sentences(tmp_path, name, content):
    path = tmp_path / name
    if content == "truncate":
        state = {"w": torch.arange(10000.0)}
        torch.save(state, path) if name.endswith(".pt") else save_file(state, str(path))
        path.write_bytes(path.read_bytes()[:3000])
    else:
        path.write_bytes(content)
    with pytest.raises(RunFolderError, match=f"{name}.*--classifier-weights"):
        read_state_dict(path)


def test_14_a_pickle_that_would_run_code_is_refused_in_a_sentence(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "code": zipfile.ZipFile}, path)
    with pytest.raises(RunFolderError, match="evil.pt cannot be read as classifier weights"):
        read_state_dict(path)


def test_14_an_unwritable_runs_folder_is_a_sentence(tmp_path, capsys):
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs folder should be")
    code = main(["--stage", "classifier", "--runs-dir", str(blocker)])
    err = capsys.readouterr().err
    assert code == 2 and one_sentence(err) and "runs" in err
    assert "no space" not in err.lower()
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/x/last.ckpt")
    read_only = OSError(errno.EROFS, "Read-only file system", "/runs")
    assert "/runs/x/last.ckpt" in os_error_sentence(full) and "free some space" in os_error_sentence(full)
    assert "--runs-dir" in os_error_sentence(read_only)


# 15 ------------------------------------------------------------------------------------------------

def test_15_model_json_variants_are_sentences(bundle_copy):
    manifest = json.loads((bundle_copy / "model.json").read_text())
    variants = {
        "unknown generator key": json.dumps({**manifest, "generator": {**manifest["generator"], "wings": 2}}),
        "a list": json.dumps([manifest]),
        "not utf-8": b"\xff\xfe\x00{",
        "files not an object": json.dumps({**manifest, "files": ["classifier.safetensors"]}),
    }
    for label, content in variants.items():
        data = content if isinstance(content, bytes) else content.encode()
        (bundle_copy / "model.json").write_bytes(data)
        with pytest.raises(BundleError, match="model.json") as caught:
            Explainer.from_bundle(bundle_copy)
        assert "export the run again" in str(caught.value), label


def test_15_a_truncated_safetensors_with_its_checksum_updated_is_a_sentence(bundle_copy):
    weights = bundle_copy / "generator.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    manifest = json.loads((bundle_copy / "model.json").read_text())
    manifest["files"]["generator"]["sha256"] = sha256(weights)
    (bundle_copy / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="generator.safetensors is not a readable safetensors file"):
        Explainer.from_bundle(bundle_copy)


# 11 and 16 -----------------------------------------------------------------------------------------

def test_11_16_python_api_inputs(bundle_run):
    explainer = Explainer.from_bundle(bundle_run)
    images = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    from_numpy = explainer.explain(images)
    assert from_numpy.distinct.shape == (2, 3, 16, 16)
    assert torch.equal(explainer.explain(images, target="disk").target, torch.tensor([1, 1]))
    assert torch.equal(explainer.explain(images, target=["triangle", "square"]).target, torch.tensor([2, 0]))
    with pytest.raises(InputError, match="not a class of this model.*'disk'"):
        explainer.explain(images, target="cat")
    with pytest.raises(InputError, match="empty batch"):
        explainer.explain(np.zeros((0, 3, 16, 16), dtype=np.float32))
    for bad in (float("nan"), float("inf")):
        poisoned = torch.from_numpy(images.copy())
        poisoned[1, 0, 3, 3] = bad
        with pytest.raises(InputError, match=r"NaN or infinite pixels in image\(s\) \[1\]"):
            explainer.explain(poisoned)
    with pytest.raises(DXAIError, match="refine_steps"):
        explainer.explain(images, refine_steps=-1)


# 17 ------------------------------------------------------------------------------------------------

def test_17_dotted_overrides_may_follow_flags():
    args = parse_args(["--stage", "classifier", "classifier.lr=0.1", "--seed", "3", "data.img_size=16"])
    assert args.overrides == ["classifier.lr=0.1", "data.img_size=16"] and args.seed == 3
    infer_args = __import__("dxai.cli.infer", fromlist=["parse_args"]).parse_args(
        ["a.png", "--run", "r", "b.png", "--batch-size", "2", "c.png"])
    assert infer_args.inputs == ["a.png", "b.png", "c.png"] and infer_args.batch_size == 2


def test_17_the_export_hint_names_the_runs_folder(tmp_path):
    run = tmp_path / "myruns" / "afhq" / "big"
    run.mkdir(parents=True)
    with pytest.raises(BundleError) as caught:
        find_bundle(run)
    assert (f"python train.py --stage export --dataset afhq --runs-dir {tmp_path / 'myruns'} --run-name big"
            in str(caught.value))


def test_17_the_image_size_message_suggests_what_works():
    with pytest.raises(ConfigError) as caught:
        validate(load_config("synthetic", ["data.img_size=33"]))
    message = str(caught.value)
    assert "cannot take 33 px images" in message and "num_downsample=1" not in message and "32 or 64" in message
    with pytest.raises(ConfigError, match=r"num_downsample to one of \[1, 2\]"):
        validate(load_config("synthetic", ["data.img_size=20", "decomposition.num_downsample=3"]))


def test_atomic_bytes_replace_in_one_step(tmp_path):
    target = tmp_path / "weights.safetensors"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["weights.safetensors"]
