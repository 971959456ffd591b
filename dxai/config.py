"""Typed configuration: dataclass defaults <- configs/<dataset>.yaml <- command-line flags.

Every run writes the fully resolved configuration to ``<run>/config.yaml``. Any key can be
overridden from the command line with a dotted assignment, e.g. ``decomposition.lr=2e-4``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dxai.errors import DXAIError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


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
    # backgrounds, which makes the classifier neutral on a perfect agnostic part (BRIEF section 2).
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
    lambda_adv: float = 2.0              # eq. 15 weights
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
    """The evaluation report: beta-AUC of DXAI and the heatmap baselines, ground-truth scores,
    classifier matching and rate-distortion curves (``dxai.evaluation.stage``)."""
    num_images: int = 256                # validation images of beta-AUC and the ground-truth scores
    batch_size: int = 64
    baselines: list[str] = field(default_factory=lambda: [
        "random", "grad_cam", "guided_grad_cam", "integrated_gradients", "gradient_shap", "lrp",
        "internal_influence"])
    path_steps: int = 50                 # Integrated Gradients and Internal Influence (captum's default)
    panel_images: int = 6                # rows of the decomposition grid
    compare_classifier: str | None = None  # another run folder, same data: classifier matching (table 3)
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
    stage: str = "all"


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
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(dataset: str = "synthetic", overrides: list[str] | None = None) -> Config:
    """Defaults, then ``configs/<dataset>.yaml``, then dotted ``key=value`` overrides."""
    path = CONFIG_DIR / f"{dataset}.yaml"
    if not path.is_file():
        raise ConfigError(f"no configuration for data set {dataset!r} ({path} is missing); "
                          f"choose one of {available_datasets()}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path),
                                 OmegaConf.from_dotlist(list(overrides or [])))
    except OmegaConfBaseException as error:
        raise ConfigError(f"invalid configuration ({path} or command-line overrides): {error}") from None
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
        merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path))
    except OmegaConfBaseException as error:
        raise ConfigError(f"{path} is not a dxai run configuration: {error}") from None
    return OmegaConf.to_object(merged)


__all__ = ["Config", "ConfigError", "MISSING", "load_config", "save_config", "read_config"]
