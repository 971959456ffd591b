"""The whole pipeline under DDP, as users launch it: 2 CPU processes (gloo) on one machine, and
2 nodes x 1 process on localhost with the environment variables Lightning reads on a cluster."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dxai.inference import Explainer
from dxai.run_folder import checkpoint_dir

REPO = Path(__file__).resolve().parent.parent
SIZE = 16
TINY = [  # on top of --smoke: networks small enough for seconds per stage on a CPU
    "--classifier", "simple", "trainer.accelerator=cpu", "trainer.progress_bar=false", "trainer.cpu_threads=1",
    "data.num_classes=2", f"data.img_size={SIZE}", "data.num_workers=0", "data.augment=false",
    "decomposition.num_branches=3", "decomposition.base_channels=4", "decomposition.max_channels=8",
    "decomposition.num_bottleneck=1", "decomposition.disc_base_channels=4", "decomposition.disc_max_channels=8",
    "decomposition.mapping_hidden=16", "decomposition.style_dim=8", "decomposition.num_downsample=2",
    "masks.base_channels=4", "masks.max_channels=8", "cartoonx.levels=2",
    "evaluation.baselines=[random,grad_cam,integrated_gradients]",
]
STAGE_SECTIONS = ("classifier", "decomposition", "masks", "export", "evaluation")


def make_tree(root: Path, train: int = 12, val: int = 8) -> Path:
    """Two classes of smooth random images (bright vs dark) in the StarGAN-v2 layout."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        for label, name in enumerate(("dark", "bright")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                coarse = rng.random((4, 4, 3)) * 0.5 + 0.5 * label
                image = Image.fromarray((coarse * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BICUBIC)
                image.save(folder / f"{index:02d}.png")
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(**extra) -> dict:
    env = {key: value for key, value in os.environ.items()
           if key not in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "WORLD_SIZE", "LOCAL_RANK", "RANK")}
    return {**env, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", **extra}


@pytest.mark.slow
def test_full_pipeline_under_two_process_ddp(tmp_path):
    tree = make_tree(tmp_path / "data")
    runs = tmp_path / "runs"
    command = [sys.executable, "train.py", "--dataset", "folder", "--data-root", str(tree), "--smoke",
               "--runs-dir", str(runs), "--devices", "2", "--strategy", "ddp", *TINY]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240,
                            env=environment(MASTER_PORT=str(free_port())))
    assert result.returncode == 0, result.stderr[-4000:]
    run_dir = runs / "folder" / "smoke"
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    assert all(section in metrics for section in STAGE_SECTIONS), sorted(metrics)
    assert metrics["classifier"]["steps"] == 4 and metrics["decomposition"]["iterations"] == 2
    assert set(metrics["seconds"]) == {"classifier", "decomposition", "masks", "export", "evaluate"}
    assert (run_dir / "report" / "report.md").is_file()
    assert (checkpoint_dir(run_dir, "classifier") / "independent_0.safetensors").is_file()  # on half the images
    assert metrics["classifier"]["independent"][0]["training_images"] == 12
    assert 0 <= metrics["decomposition"]["transfer_true_prob"] <= 1
    assert set(metrics["evaluation"]["transfer"]) == set(metrics["evaluation"]["beta_auc"])
    weights = sorted(p.name for p in checkpoint_dir(run_dir, "masks").glob("*.safetensors"))
    assert weights[0] == "mask_predictor.safetensors" and [name[:10] for name in weights[1:]] == ["reference_"]
    explainer = Explainer.from_bundle(run_dir)
    assert explainer.class_names == ["bright", "dark"]
    images = [np.asarray(Image.open(tree / "val" / name / "00.png"), dtype=np.float32) / 255 for name in ("bright",)]
    explanation = explainer.explain(np.stack(images).transpose(0, 3, 1, 2))
    assert explanation.distinct.shape == (1, 3, SIZE, SIZE)


@pytest.mark.slow
def test_two_nodes_of_one_process_on_localhost(tmp_path):
    tree = make_tree(tmp_path / "data")
    runs = tmp_path / "runs"
    command = [sys.executable, "train.py", "--dataset", "folder", "--data-root", str(tree), "--smoke",
               "--runs-dir", str(runs), "--stage", "classifier", "--num-nodes", "2", "--devices", "1",
               "--strategy", "ddp", *TINY]
    port = str(free_port())
    nodes = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=environment(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(rank),
                                              WORLD_SIZE="2", LOCAL_RANK="0"))
             for rank in (0, 1)]
    try:
        outputs = [node.communicate(timeout=180)[0] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for rank, (node, output) in enumerate(zip(nodes, outputs)):
        assert node.returncode == 0, f"node {rank}:\n{output[-4000:]}"
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in output, output[-2000:]
    run_dir = runs / "folder" / "smoke"
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    assert metrics["classifier"]["steps"] == 4 and set(metrics["seconds"]) == {"classifier"}
    assert (checkpoint_dir(run_dir, "classifier") / "classifier.safetensors").is_file()
