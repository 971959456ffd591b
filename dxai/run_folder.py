"""The run folder's layout: where every stage writes its outputs, and how later code reads them.

    <run>/config.yaml                      the resolved configuration
    <run>/checkpoints/<stage>/last.ckpt    Lightning's resume point of a training stage
    <run>/checkpoints/classifier/classifier.safetensors
    <run>/checkpoints/decomposition/{generator_ema,mapping_ema,discriminator}.safetensors
    <run>/checkpoints/masks/mask_predictor.safetensors
    <run>/model/                           the exported inference bundle (``dxai.bundle``)
    <run>/report/                          metrics.json, report.md, plots and panels

Weights are safetensors written atomically; the loaders return frozen networks in eval mode and
say which stage to run when a file is missing.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from dxai.config import Config
from dxai.errors import DXAIError
from dxai.io import atomic_write_bytes
from dxai.models import build_configured_classifier, build_generator, build_mapping, build_mask_predictor
from dxai.nets.generator import Generator
from dxai.nets.mapping import MappingNetwork
from dxai.nets.mask_predictor import MaskPredictor

log = logging.getLogger(__name__)
DECOMPOSITION_WEIGHTS = ("generator_ema", "mapping_ema", "discriminator")


class RunFolderError(DXAIError):
    """A stage output that is missing or does not fit the configuration."""


def checkpoint_dir(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / "checkpoints" / stage


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole torch checkpoint (a zip archive whose every member's CRC checks
    out), or None when it is one. Nothing is unpickled."""
    try:
        if path.stat().st_size == 0:
            return "it is empty"
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        return f"its member {bad} is damaged" if bad else None
    except (zipfile.BadZipFile, EOFError, ValueError, RuntimeError) as error:
        return f"it is truncated or not a checkpoint ({error})"


def resume_path(run_dir: Path, stage: str) -> str | None:
    """``last.ckpt`` of a stage if an earlier, interrupted run left a whole one.

    A truncated or otherwise unreadable ``last.ckpt`` (say, from a full disk under an earlier dxai,
    which wrote checkpoints in place) is set aside as ``last.ckpt.corrupt`` (``.corrupt2``, ...) by
    rank 0, with a warning, and the stage starts again from scratch; nothing is deleted."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    last = checkpoint_dir(run_dir, stage) / "last.ckpt"
    if not last.is_file():
        return None
    try:
        problem = checkpoint_problem(last)
    except FileNotFoundError:  # rank 0 set it aside meanwhile
        return None
    if problem is None:
        return str(last)
    if rank_zero_only.rank == 0:
        aside, number = last.with_name("last.ckpt.corrupt"), 1
        while aside.exists():  # an earlier one set aside stays too
            number += 1
            aside = last.with_name(f"last.ckpt.corrupt{number}")
        last.replace(aside)
        log.warning("%s cannot be resumed from: %s. It was moved to %s and the %s stage starts again from "
                    "scratch", last, problem, aside, stage)
    return None


def report_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "report"


def bundle_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "model"


def classifier_path(run_dir: Path) -> Path:
    return checkpoint_dir(run_dir, "classifier") / "classifier.safetensors"


def independent_classifier_path(run_dir: Path, index: int) -> Path:
    """The ``index``-th classifier trained apart from the explained one (transfer neutrality)."""
    return checkpoint_dir(run_dir, "classifier") / f"independent_{index}.safetensors"


def decomposition_path(run_dir: Path, name: str) -> Path:
    return checkpoint_dir(run_dir, "decomposition") / f"{name}.safetensors"


def predictor_path(run_dir: Path) -> Path:
    return checkpoint_dir(run_dir, "masks") / "mask_predictor.safetensors"


def distill_targets_path(run_dir: Path) -> Path:
    return checkpoint_dir(run_dir, "masks") / "distill_targets.safetensors"


def save_weights(module: nn.Module | dict[str, torch.Tensor], path: Path) -> None:
    """A module's state dict (or a dict of tensors) as safetensors, written atomically."""
    state = module.state_dict() if isinstance(module, nn.Module) else module
    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in state.items()}))


def read_safetensors(path: Path, fix: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, or a ``RunFolderError`` naming it and ``fix``."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise
    except Exception as error:  # safetensors raises its own SafetensorError, or OSError
        raise RunFolderError(f"{path} is not a readable safetensors file ({str(error).splitlines()[0]}); "
                             f"{fix}") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights from .safetensors, or a torch state dict / Lightning checkpoint (tensors only)."""
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"classifier weights {path} do not exist")
    fix = ("pass --classifier-weights a .safetensors file or a torch state dict saved with torch.save "
           "(tensors only)")
    if path.suffix == ".safetensors":
        return read_safetensors(path, fix)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, random bytes, or a pickle that would run code
        raise RunFolderError(f"{path} cannot be read as classifier weights ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else 'no details'}); {fix}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunFolderError(f"{path} holds no state dict of classifier weights; {fix}")
    return state


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], source: Path, cfg: Config) -> nn.Module:
    """``state`` into the classifier ``model``, with a sentence for every way it can fail to fit."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise RunFolderError(
            f"{source} does not fit a {cfg.classifier.arch} classifier ({len(missing)} missing, "
            f"{len(unexpected)} unexpected tensors, e.g. {(missing or unexpected)[:3]}); "
            f"pass --classifier with the architecture these weights were trained as")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise RunFolderError(
                f"{source}: tensor {name} has shape {tuple(tensor.shape)} but the configuration needs "
                f"{tuple(expected[name].shape)} ({cfg.data.num_classes} classes, {cfg.data.img_channels} "
                f"channels, {cfg.data.img_size} px); weights trained for another class count, channel "
                "count or image size do not fit this data set")
    model.load_state_dict(state)
    return model


def _frozen(network: nn.Module) -> nn.Module:
    return network.eval().requires_grad_(False)


def _load(network: nn.Module, path: Path, stage: str, settings: str) -> nn.Module:
    if not path.is_file():
        raise RunFolderError(f"{path} is missing; run the {stage} stage first (python train.py --stage {stage})")
    state = read_safetensors(path, f"run the {stage} stage again (python train.py --stage {stage})")
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        raise RunFolderError(f"{path} does not fit the {settings} settings of this configuration: "
                             f"{str(error).splitlines()[0]}") from None
    return _frozen(network)


def load_classifier(cfg: Config, run_dir: Path) -> nn.Module:
    """The run's frozen classifier in eval mode (input: images in [-1, 1]; output: logits)."""
    path = classifier_path(run_dir)
    if not path.is_file():
        raise RunFolderError(f"{path} is missing; run the classifier stage first "
                             "(python train.py --stage classifier)")
    state = read_safetensors(path, "run the classifier stage again (python train.py --stage classifier)")
    return _frozen(load_weights_into(build_configured_classifier(cfg), state, path, cfg))


def load_independent_classifiers(cfg: Config, run_dir: Path) -> list[nn.Module]:
    """The run's ``classifier.independent`` independently trained classifiers, frozen (same domain as
    ``load_classifier``); they judge the explanations, nothing is trained against them."""
    fix = "run the classifier stage again (python train.py --stage classifier)"
    classifiers = []
    for index in range(cfg.classifier.independent):
        path = independent_classifier_path(run_dir, index)
        if not path.is_file():
            raise RunFolderError(f"{path} is missing; {fix}, or set classifier.independent={index}")
        state = read_safetensors(path, fix)
        classifiers.append(_frozen(load_weights_into(build_configured_classifier(cfg), state, path, cfg)))
    return classifiers


def load_decomposition(cfg: Config, run_dir: Path) -> tuple[Generator, MappingNetwork]:
    """The trained EMA generator and mapping network, frozen and in eval mode."""
    generator = build_generator(cfg)
    mapping = build_mapping(cfg, generator)
    return (_load(generator, decomposition_path(run_dir, "generator_ema"), "decomposition", "decomposition"),
            _load(mapping, decomposition_path(run_dir, "mapping_ema"), "decomposition", "decomposition"))


def load_mask_predictor(cfg: Config, run_dir: Path) -> MaskPredictor:
    """The trained mask predictor, frozen and in eval mode (images in [0, 1] and classes in,
    CartoonX masks out)."""
    return _load(build_mask_predictor(cfg), predictor_path(run_dir), "masks", "masks and cartoonx")
