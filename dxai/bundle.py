"""The inference bundle on disk: ``model.json`` + safetensors weights, checked before use.

Written by the export stage (``dxai.training.export``), read by ``dxai.inference``. Loading
a bundle never unpickles code; a file that is missing, or is not the one the manifest's
SHA-256 names, is refused with a sentence that says what to do.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from dxai.errors import DXAIError

BUNDLE_FORMAT = "dxai-bundle"
BUNDLE_VERSION = 1
WEIGHT_FILES = {"classifier": "classifier.safetensors", "generator": "generator.safetensors",
                "mask_predictor": "mask_predictor.safetensors"}
REQUIRED_KEYS = ("format", "class_names", "img_size", "img_channels", "normalization", "classifier", "generator",
                 "styles", "mask_predictor", "cartoonx", "files")


class BundleError(DXAIError):
    """A bundle folder that is missing, incomplete or inconsistent."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_bundle(path: str | Path) -> Path:
    """A bundle folder, given it or the run folder that holds it as ``model/``."""
    path = Path(path).expanduser()
    for candidate in (path, path / "model"):
        if (candidate / "model.json").is_file():
            return candidate
    if not path.exists():
        raise BundleError(f"{path} does not exist; pass a run folder (runs/<dataset>/<name>) or its model/ bundle")
    raise BundleError(f"no model.json in {path} or {path / 'model'}; export the run first "
                      f"({export_command(path)})")


def export_command(path: Path) -> str:
    """The train.py call that exports the run folder ``path`` (``<runs-dir>/<dataset>/<name>``, or
    its ``model/``)."""
    run = path.parent if path.name == "model" else path
    run = run.resolve() if run.exists() else run
    if len(run.parts) < 3:
        return "python train.py --stage export --dataset <dataset> --runs-dir <runs-dir> --run-name <name>"
    return (f"python train.py --stage export --dataset {run.parent.name} --runs-dir {run.parent.parent} "
            f"--run-name {run.name}")


def read_manifest(bundle: Path) -> dict:
    try:
        manifest = json.loads((bundle / "model.json").read_bytes())
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise BundleError(f"{bundle / 'model.json'} is not valid JSON ({error}); export the run again") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{bundle / 'model.json'} holds a JSON {type(manifest).__name__}, not the object of a "
                          "dxai bundle manifest; export the run again")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if manifest.get("format") != BUNDLE_FORMAT or missing:
        raise BundleError(f"{bundle / 'model.json'} is not a dxai bundle manifest (missing {missing}); "
                          "export the run again")
    return manifest


def load_weights(bundle: Path, manifest: dict, name: str, module: nn.Module) -> nn.Module:
    """Load one network's safetensors after checking that it is the file the manifest names."""
    files = manifest["files"]
    entry = files.get(name) if isinstance(files, dict) else None
    if not isinstance(entry, dict) or "path" not in entry or "sha256" not in entry:
        raise BundleError(f"{bundle / 'model.json'} lists no {name} weights; export the run again")
    path = bundle / str(entry["path"])
    if not path.is_file():
        raise BundleError(f"{path} is missing from the bundle; export the run again")
    if sha256(path) != entry["sha256"]:
        raise BundleError(f"{path} is not the file this bundle was exported with (checksum differs); "
                          "export the run again rather than mixing files of different runs")
    try:
        state = load_file(str(path))
    except Exception as error:  # safetensors' own SafetensorError: truncated or not safetensors
        raise BundleError(f"{path} is not a readable safetensors file ({str(error).splitlines()[0]}); "
                          "export the run again") from None
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise BundleError(f"{path} does not fit the architecture in model.json: "
                          f"{str(error).splitlines()[0]}") from None
    return module.eval().requires_grad_(False)
