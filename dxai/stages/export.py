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
import os
import shutil
import tempfile
from pathlib import Path

from dxai.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, WEIGHT_FILES, sha256
from dxai.config import Config
from dxai.data.datamodule import DXAIDataModule
from dxai.io import atomic_write_text, dir_mode, read_metrics, update_metrics
from dxai.models import cartoonx_settings, generator_settings, predictor_settings
from dxai.nets.mapping import class_styles
from dxai.normalization import Normalization
from dxai.run_folder import bundle_dir, load_classifier, load_decomposition, load_mask_predictor, save_weights

RANK_ZERO_ONLY = True


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
        os.chmod(staging, dir_mode())  # mkdtemp's 0700 would make the bundle private whatever the umask
        for name, module in (("classifier", classifier), ("generator", generator), ("mask_predictor", predictor)):
            save_weights(module, staging / WEIGHT_FILES[name])
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
        atomic_write_text(staging / "model.json", json.dumps(manifest, indent=2) + "\n")
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
    return (bundle_dir(run_dir) / "model.json").is_file() and "export" in read_metrics(run_dir)


def run(cfg: Config, run_dir: Path) -> dict:
    """Write the bundle from the run's trained stages."""
    path = write_bundle(cfg, run_dir, DXAIDataModule(cfg.data).class_names)
    update_metrics(run_dir, "export", {"bundle": str(path)})
    return {"bundle": str(path)}
