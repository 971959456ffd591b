"""Export stage: the inference bundle ``<run>/model/`` (safetensors weights + model.json).

The bundle holds everything inference needs and nothing it must unpickle: the classifier, the
EMA generator, the mask predictor, and model.json with the architecture settings, class
names, image size and channels, normalisation, CartoonX settings, one deterministic style
vector per class, and the SHA-256 of every weight file (so that a bundle whose files were
swapped or truncated is refused). It is written to a temporary folder and renamed into place,
so a half-written bundle is never taken for a whole one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from dxai.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, WEIGHT_FILES, sha256
from dxai.config import Config
from dxai.data.datamodule import DXAIDataModule
from dxai.data.transforms import Normalization
from dxai.evaluation.speed import explainer_vs_integrated_gradients
from dxai.inference import Explainer
from dxai.io import read_metrics, update_metrics
from dxai.nets.mapping import class_styles
from dxai.training.classifier import load_classifier
from dxai.training.decomposition import load_decomposition
from dxai.training.masks import load_mask_predictor



RANK_ZERO_ONLY = True


def bundle_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "model"


def generator_settings(cfg: Config) -> dict:
    d = cfg.decomposition
    return {"img_size": cfg.data.img_size, "img_channels": cfg.data.img_channels, "num_branches": d.num_branches,
            "base_channels": d.base_channels, "max_channels": d.max_channels, "num_downsample": d.num_downsample,
            "num_bottleneck": d.num_bottleneck, "style_dim": d.style_dim}


def predictor_settings(cfg: Config) -> dict:
    m, c = cfg.masks, cfg.cartoonx
    return {"img_size": cfg.data.img_size, "channels": cfg.data.img_channels, "num_classes": cfg.data.num_classes,
            "levels": c.levels, "wavelet": c.wavelet, "mode": c.mode, "base_channels": m.base_channels,
            "max_channels": m.max_channels, "initial_keep": m.initial_keep}


def cartoonx_settings(cfg: Config) -> dict:
    c = cfg.cartoonx
    return {"wavelet": c.wavelet, "levels": c.levels, "mode": c.mode, "lam": c.lam, "lr": c.lr,
            "num_samples": c.num_samples, "distortion": c.distortion}


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def write_bundle(cfg: Config, run_dir: Path, class_names: list[str]) -> Path:
    """Assemble the bundle from the run's trained stages and move it into ``<run>/model/``."""
    classifier = load_classifier(cfg, run_dir)
    generator, mapping = load_decomposition(cfg, run_dir)
    predictor = load_mask_predictor(cfg, run_dir)
    styles = class_styles(mapping, cfg.data.num_classes)
    normalization = Normalization.symmetric(cfg.data.img_channels)
    target = bundle_dir(run_dir)
    staging = Path(tempfile.mkdtemp(dir=run_dir, prefix=".model-"))
    try:
        for name, module in (("classifier", classifier), ("generator", generator), ("mask_predictor", predictor)):
            save_file(_state(module), str(staging / WEIGHT_FILES[name]))
        manifest = {
            "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION,
            "dataset": cfg.run.dataset, "class_names": class_names,
            "img_size": cfg.data.img_size, "img_channels": cfg.data.img_channels,
            "normalization": {"mean": list(normalization.mean), "std": list(normalization.std)},
            "classifier": {"arch": cfg.classifier.arch, "num_classes": cfg.data.num_classes},
            "generator": generator_settings(cfg),
            "styles": styles.cpu().tolist(),
            "mask_predictor": predictor_settings(cfg),
            "cartoonx": cartoonx_settings(cfg),
            "files": {name: {"path": file, "sha256": sha256(staging / file)} for name, file in WEIGHT_FILES.items()},
        }
        (staging / "model.json").write_text(json.dumps(manifest, indent=2) + "\n")
        old = None
        if target.exists():
            old = target.with_name(f".model-old-{staging.name}")
            target.rename(old)
        staging.rename(target)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def is_done(cfg: Config, run_dir: Path) -> bool:
    return (bundle_dir(run_dir) / "model.json").is_file() and "inference" in read_metrics(run_dir)


SPEED_IMAGES = 16


def run(cfg: Config, run_dir: Path) -> dict:
    """Write the bundle, then time the Explainer it gives against Integrated Gradients."""
    data = DXAIDataModule(cfg.data)
    path = write_bundle(cfg, run_dir, data.class_names)
    explainer = Explainer.from_bundle(path)
    count = min(SPEED_IMAGES, len(data.val_set))
    images = data.normalization.denormalize(torch.stack([data.val_set[i]["image"] for i in range(count)]))
    speed = explainer_vs_integrated_gradients(explainer, images.clamp(0, 1))
    update_metrics(run_dir, "inference", {**speed, "classifier": cfg.classifier.arch, "bundle": str(path)})
    return {"bundle": str(path), "speedup_vs_integrated_gradients": speed["speedup_vs_integrated_gradients"]}
