"""Typed configuration: dataclass defaults <- base file(s) <- configs/<dataset>.yaml <- command line.

A data set's file may start from shared settings with ``base: base/natural.yaml`` (a path
relative to the file that names it, or a list of such paths, merged in order; a base may name
bases of its own). Files under ``configs/base/`` are not data sets. Every run writes the fully
resolved configuration to ``<run>/config.yaml``. Any key can be overridden from the command
line with a dotted assignment, e.g. ``decomposition.lr=2e-4``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dxai.errors import DXAIError


def _config_dir() -> Path:
    """The configuration files: ``dxai/configs/`` in an installed package (the build ships the
    repository's top-level ``configs/`` there), else ``configs/`` beside the package in a source
    checkout. The top-level ``configs/`` is the only copy kept in the repository."""
    packaged = resources.files("dxai") / "configs"
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "configs"


CONFIG_DIR = _config_dir()
BASE_KEY = "base"          # a data set file's shared settings: a path or a list of paths
RETIRED_KEYS = ("run.stage",)  # written by earlier versions into config.yaml; ignored when read


@dataclass
class DataConfig:
    kind: str = "synthetic"              # synthetic | folder
    family: str = "shapes"               # synthetic family: shapes | colors | noise
    root: str | None = None              # folder data sets: ROOT/train/<class>, ROOT/val/<class>
    class_names: list[str] = field(default_factory=list)  # folder data: expected classes (optional)
    num_classes: int = 3
    img_size: int = 32
    img_channels: int = 3
    train_size: int = 6000               # synthetic only
    val_size: int = 512                  # synthetic only
    batch_size: int = 64
    num_workers: int = 0
    augment: bool = False                # StarGAN-v2 crop + flip on the training split
    seed: int = 0                        # synthetic data seed (val uses seed + 1)


@dataclass
class ClassifierConfig:
    arch: str = "resnet18"               # resnet18 | simple
    weights: str | None = None           # a user's trained weights instead of training one
    max_steps: int = 600
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_every_steps: int = 200
    # Synthetic data only: weight of a cross-entropy toward the uniform distribution on the true
    # backgrounds, so that a perfect agnostic part is class agnostic in the sense of the DXAI
    # paper's definition 1 (arXiv 2401.00320).
    neutral_background_weight: float = 0.0


@dataclass
class DecompositionConfig:
    """DXAI decomposition training; ``max_steps`` and every ``*_every_steps`` count iterations
    (one discriminator update + one generator/mapping update)."""
    num_branches: int = 5                # n: psi_1 (distinct) + n - 1 agnostic branches
    latent_dim: int = 16
    style_dim: int = 64
    style_per_block: bool = False        # one style vector per AdaIN block instead of one for all
    base_channels: int = 32              # generator width per branch at full resolution
    max_channels: int = 128              # generator width cap per branch
    num_downsample: int = 2              # encoder/decoder resolution levels (img_size % 2**it == 0)
    num_bottleneck: int = 2              # ResBlks at the lowest resolution, in encoder and decoder each
    encoder_blocks: list[int] | None = None  # ResBlks per encoder level, the last one downsampling (None: 1 each)
    skip: str = "add"                    # U-Net skips: add (after upsampling) | concat (before it, official code)
    disc_base_channels: int = 32
    disc_max_channels: int = 256
    mapping_hidden: int = 256
    batch_size: int | None = None        # None: data.batch_size
    lr: float = 1e-4                     # generator
    mapping_lr: float = 1e-6
    disc_lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    weight_decay: float = 1e-4
    ema_beta: float = 0.999
    lambda_adv: float = 2.0              # loss weights of the DXAI paper, eq. 14-15
    lambda_kld: float = 1.0
    lambda_cf: float = 2.0
    lambda_rec: float = 4.0
    lambda_dr: float = 4.0
    lambda_orth: float = 1.0
    lambda_r1: float = 1.0               # R1 penalty of the discriminator step (StarGAN-v2)
    max_steps: int = 3000
    val_every_steps: int = 500
    image_every_steps: int = 250
    num_panel_images: int = 6


@dataclass
class CartoonXConfig:
    wavelet: str = "db3"
    levels: int = 3                      # J; 5 at 256 px
    mode: str = "zero"
    lam: float = 20.0
    lr: float = 1e-3
    steps: int = 2000
    num_samples: int = 64                # L
    distortion: str = "label"


@dataclass
class MasksConfig:
    """The amortized mask predictor. Its masks, loss and the CartoonX runs of its evaluation use
    the ``cartoonx`` section's wavelet, levels, lam, lr and distortion."""
    base_channels: int = 32              # predictor width at full resolution
    max_channels: int = 128
    initial_keep: float = 0.95           # every mask entry of a fresh predictor (risk-averse start)
    max_steps: int = 600
    lam_warmup: float = 0.6              # fraction of max_steps over which lam ramps up from 0 (continuation)
    batch_size: int | None = 32          # None: data.batch_size
    lr: float = 1e-3
    num_samples: int = 4                 # L per training image, fresh noise every step
    image_every_steps: int = 200
    num_panel_images: int = 6
    distill: bool = False                # also fit CartoonX masks optimised on a cached training subset
    distill_images: int = 64
    distill_steps: int = 2000
    distill_weight: float = 10.0
    eval_images: int = 32                # validation images of the evaluation, all in one CartoonX call
    eval_steps: int = 2000               # CartoonX steps from the all-ones mask
    eval_predictor_steps: int = 300      # CartoonX steps from the predicted mask
    eval_num_samples: int = 4            # L of the evaluation's CartoonX optimisation
    eval_loss_samples: int = 16          # the fixed noise set on which every mask's loss is measured
    eval_every: int = 20                 # steps between measured points of the all-ones curve
    eval_predictor_every: int = 10       # the same for the predictor-initialised curve
    eval_seed: int = 0


@dataclass
class EvaluationConfig:
    """The evaluate stage's report: beta-AUC (DXAI paper, eq. 10 and table 1) of DXAI and the
    heatmap baselines, ground-truth scores, classifier matching and rate-distortion curves."""
    num_images: int = 256                # validation images of beta-AUC and the ground-truth scores
    batch_size: int = 64
    baselines: list[str] = field(default_factory=lambda: [
        "random", "grad_cam", "guided_grad_cam", "integrated_gradients", "gradient_shap", "lrp",
        "internal_influence"])
    path_steps: int = 50                 # Integrated Gradients and Internal Influence (captum's default)
    panel_images: int = 6                # rows of the decomposition grid
    compare_classifier: str | None = None  # another run folder, same data: classifier matching (DXAI table 3)
    matching_baselines: list[str] = field(default_factory=lambda: ["grad_cam", "guided_grad_cam", "lrp"])
    rd_images: int = 8                   # rate-distortion curves (CartoonX paper, fig. 7)
    rd_steps: int = 200                  # CartoonX and Pixel RDE steps (the paper: 2000 at lr 1e-3)
    rd_lr: float = 1e-2
    rd_num_samples: int = 4              # L of the optimisation
    rd_curve_samples: int = 16           # noise samples per image and point of a curve
    seed: int = 0


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: str = "1"                   # an int, a list like "0,1", or "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    logger: str = "csv"                  # csv | wandb
    seed: int = 0
    progress_bar: bool = True
    cpu_threads: int | None = None       # torch threads per process (None: torch's default)


@dataclass
class RunConfig:
    dataset: str = "synthetic"
    runs_dir: str = "runs"
    run_name: str = "default"


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    decomposition: DecompositionConfig = field(default_factory=DecompositionConfig)
    cartoonx: CartoonXConfig = field(default_factory=CartoonXConfig)
    masks: MasksConfig = field(default_factory=MasksConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.runs_dir) / self.run.dataset / self.run.run_name


class ConfigError(DXAIError):
    """A configuration that cannot be used, with a message that says how to fix it."""


def available_datasets() -> list[str]:
    """The data sets: ``configs/*.yaml`` (shared bases live in ``configs/base/`` and are not listed)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if p.is_file())


def _read_yaml(path: Path, named_by: Path | None = None) -> DictConfig:
    """One configuration file as a mapping; a clear error when it is missing or unparsable."""
    by = f" (named as {BASE_KEY} in {named_by})" if named_by else ""
    if not path.is_file():
        raise ConfigError(f"the configuration file {path}{by} is missing")
    try:
        loaded = OmegaConf.load(path)
    except (OmegaConfBaseException, yaml.YAMLError, OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the configuration file {path}{by}: {error}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"the configuration file {path}{by} must hold a mapping of settings, "
                          f"not a {type(loaded).__name__}")
    return loaded


def _resolve_file(path: Path, named_by: Path | None = None,
                  chain: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]]:
    """(file, settings) of the file's bases (recursively, in order), then of the file itself
    without its ``base`` key: the order in which they are merged."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"configuration bases form a cycle: {cycle}")
    node = _read_yaml(path, named_by)
    bases = node.pop(BASE_KEY, None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    elif OmegaConf.is_list(bases) and all(isinstance(b, str) for b in bases):
        bases = list(bases)
    else:
        raise ConfigError(f"{BASE_KEY} in {path} must be a file name relative to it, or a list of them, "
                          f"not {bases!r}")
    layers: list[tuple[Path, DictConfig]] = []
    for base in bases:
        layers += _resolve_file(path.parent / base, path, (*chain, path))
    return layers + [(path, node)]


def load_config(dataset: str = "synthetic", overrides: list[str] | None = None) -> Config:
    """Defaults, then ``configs/<dataset>.yaml`` (on top of its bases), then dotted ``key=value``
    overrides."""
    path = CONFIG_DIR / f"{dataset}.yaml"
    if not path.is_file():
        raise ConfigError(f"no configuration for data set {dataset!r} ({path} is missing); "
                          f"choose one of {available_datasets()}")
    merged = OmegaConf.structured(Config)
    for source, layer in _resolve_file(path):
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as error:
            raise ConfigError(f"invalid configuration in {source}: {error}") from None
    try:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides or [])))
    except OmegaConfBaseException as error:
        raise ConfigError(f"invalid command-line override (on top of {path}): {error}") from None
    merged.run.dataset = dataset
    if merged.data.kind == "folder" and not merged.data.root:
        merged.data.root = os.environ.get("DXAI_DATA")
    config: Config = OmegaConf.to_object(merged)
    return config


def save_config(config: Config, path: Path) -> None:
    from dxai.io import atomic_write_text

    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.structured(config)))


def read_config(path: Path) -> Config:
    """Load a run's saved ``config.yaml`` (e.g. to resume or export it)."""
    try:
        saved = OmegaConf.load(path)
        for key in RETIRED_KEYS:
            section, name = key.split(".")
            if isinstance(saved, DictConfig) and isinstance(saved.get(section), DictConfig):
                saved[section].pop(name, None)
        merged = OmegaConf.merge(OmegaConf.structured(Config), saved)
    except (OmegaConfBaseException, yaml.YAMLError, OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not a dxai run configuration: {error}") from None
    return OmegaConf.to_object(merged)


__all__ = ["Config", "ConfigError", "MISSING", "load_config", "save_config", "read_config"]
