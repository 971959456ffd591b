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
RETIRED_KEYS = ("run.stage", "masks.eval_steps", "masks.eval_predictor_steps", "masks.eval_loss_samples",
                "masks.eval_every", "masks.eval_predictor_every")  # written by earlier versions; ignored when read


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
    # Classifiers trained by the same recipe with another seed on other training images; they never
    # train the decomposition, they only judge whether its agnostic part is neutral for them too.
    independent: int = 1
    independent_max_steps: int | None = None  # None: max_steps


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
    # The kept EMA weights: the validation with the most neutral agnostic part for the independent
    # classifiers among those reconstructing x at least this well (dB); with no independent classifier, the last.
    select_min_psnr: float = 25.0
    select_tolerance: float = 0.005      # scores closer than this are a tie, won by the higher recon_psnr
    # On one CPU process with trainer.cpu_threads set: the iteration from which the stage takes both cores,
    # waiting there for the masks stage's background process (None: the first validation).
    both_cores_from: int | None = None
    # paper (eq. 5-15) | neutral (definition 1: x_hat^y~ pushed to uniform) | swap (neutral, and x_hat^y~ plus
    # another image's distinct part must pass critic and classifier as that image's class)
    objective: str = "paper"
    lambda_swap: float = 1.0             # swap: the class swaps' share of the adversarial and class terms
    # The explained classifier judges random views of the fakes (dxai/training/views.py): a shift of up to
    # view_shift pixels, a mirror image with view_flip, Gaussian noise of std view_noise (model domain)
    view_shift: int = 0
    view_flip: bool = False
    view_noise: float = 0.0
    # A class whose images carry no class evidence (the clean class of the noise family): its images'
    # distinct part is pushed to zero (lambda_null), and neutral/swap push x_hat^y~ to it, not to uniform.
    null_class: int | None = None
    lambda_null: float = 10.0
    lambda_adv: float = 2.0              # loss weights of the DXAI paper, eq. 14-15
    lambda_kld: float = 1.0
    lambda_cf: float = 2.0
    lambda_rec: float = 4.0
    lambda_dr: float = 4.0
    lambda_orth: float = 1.0
    lambda_r1: float = 1.0               # R1 penalty of the discriminator step (StarGAN-v2)
    r1_every: int = 1                    # lazy R1 (StyleGAN2): every n-th iteration, n times the weight
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
    refine_lr: float = 3.0e-2            # refinement from a given (predicted) mask: Adam lr at its start,
    refine_final_lr_fraction: float = 0.1  # decayed along a cosine to this fraction of it
    refine_num_samples: int | None = None  # L of the refinement (None: num_samples)
    refine_l1_at_zero: bool = True       # refinement: entries at 0 feel l1's derivative into [0, 1] (Schedule)
    refine_ones_track_from: float | None = 0.1   # refinement: an all-ones track joins after this fraction of the
                                                 # steps, half the draws each; the better per image (None: off)


@dataclass
class MasksConfig:
    """The amortized mask predictor. Its masks, loss and the CartoonX runs of its evaluation use
    the ``cartoonx`` section's wavelet, levels, lam, lr and distortion."""
    base_channels: int = 32              # predictor width at full resolution
    max_channels: int = 128
    initial_keep: float = 0.95           # every mask entry of a fresh predictor (risk-averse start)
    coefficient_inputs: bool = True      # the heads also read each wavelet coefficient, standardised per band
    max_steps: int = 600
    lam_warmup: float = 0.6              # fraction of max_steps over which lam ramps up from 0 (continuation)
    lam: float | None = None             # the l1 weight it trains for (None: cartoonx.lam, the one it is scored with)
    batch_size: int | None = 32          # None: data.batch_size
    lr: float = 1e-3
    num_samples: int = 4                 # L per training image, fresh noise every step
    ema_beta: float = 0.999              # > 0: the stage keeps an EMA of the weights (warmed up as the generator's)
    image_every_steps: int = 200
    num_panel_images: int = 6
    distill: bool = False                # also fit CartoonX masks optimised on a cached training subset
    distill_images: int = 64
    distill_steps: int = 2000
    distill_schedule: str = "paper"      # targets from all-ones: paper (the reference's) | refine (the control's)
    distill_weight: float = 10.0
    unroll_steps: int = 0                # semi-amortized: also the loss after this many refinement-like steps
    unroll_step_size: float = 0.1        # their signed-gradient step (the refinement's first lr)
    eval_images: int = 64                # validation images of the evaluation protocol, one CartoonX call each
    eval_reference_steps: int = 2000     # the reference: CartoonX from all-ones at cartoonx.lr (the paper's setting)
    eval_refine_steps: int = 300         # step limit of the refinement from the predicted mask and from all-ones
    eval_num_samples: int = 4            # L of every optimisation of the evaluation
    eval_bank_samples: int = 64          # the fixed noise bank per image on which every mask's loss is measured
    eval_reference_every: int = 100      # steps between measured points of the reference curve
    eval_refine_every: int = 5           # the same for the steps to reference (each image until it reaches it)
    eval_refine_curve_every: int = 25    # steps between measured points of the refinement mean curves (all images)
    eval_seed: int = 0
    eval_reference_background: bool = True  # reference and control in a second process, from the classifier on (CPU)
    start_l1_weight: float | None = 0.2  # start selection of the refinement: distortion + this * l1 (None: off)
    start_samples: int = 8               # noise draws per image that score the start candidates


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
    limit_val_batches: int | None = None  # validation batches per validation (None: the whole split; --smoke: 2)
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
            raise ConfigError(f"invalid configuration in {source}: {_first_line(error)}") from None
    for override in overrides or []:
        merged = _apply_override(merged, override)
    merged.run.dataset = dataset
    if merged.data.kind == "folder" and not merged.data.root:
        merged.data.root = os.environ.get("DXAI_DATA")
    config: Config = OmegaConf.to_object(merged)
    return config


def _first_line(error: Exception) -> str:
    """OmegaConf's message without its internals (full_key, reference_type, object_type lines)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(". ")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        row = [i]
        for j, char_b in enumerate(b, 1):
            row.append(min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = row
    return previous[-1]


def setting_keys() -> list[str]:
    """Every dotted key of the configuration, e.g. ``decomposition.lambda_rec``."""
    def walk(node: DictConfig, prefix: str) -> list[str]:
        keys = []
        for name in node:
            value = node._get_node(name)
            keys += walk(value, f"{prefix}{name}.") if isinstance(value, DictConfig) else [f"{prefix}{name}"]
        return keys

    return walk(OmegaConf.structured(Config), "")


def closest_key(key: str, keys: list[str] | None = None) -> str | None:
    """The configuration key nearest to a mistyped ``key``: within 2 edits (3 for long keys) of the whole
    key or of its last part, or the same last part in another section (``trainer.lambda_rec``)."""
    keys = setting_keys() if keys is None else keys
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
    if len(same_leaf) == 1:
        return same_leaf[0]
    limit = 3 if len(key) > 16 else 2
    scored = sorted((edit_distance(key, k), k) for k in keys)
    if scored and scored[0][0] <= limit:
        return scored[0][1]
    return None


def _apply_override(merged: DictConfig, override: str) -> DictConfig:
    """One dotted ``key=value`` on top of ``merged``; a bad one is one sentence, with the closest key
    where one is near."""
    if "=" not in override or not override.split("=", 1)[0].strip():
        raise ConfigError(f"the override {override!r} must be KEY=VALUE, e.g. decomposition.lambda_rec=8")
    key, value = (part.strip() for part in override.split("=", 1))
    node, parts = merged, key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, DictConfig) or part not in node:
            known = ".".join(parts[:depth])
            guess = closest_key(key)
            hint = f"; did you mean {guess}?" if guess else (
                f"; {known} has {', '.join(str(k) for k in node)}" if known and isinstance(node, DictConfig)
                else f"; the sections are {', '.join(str(k) for k in merged)}")
            raise ConfigError(f"unknown setting {key!r} in the override {override!r}{hint}")
        node = node._get_node(part)
    if isinstance(node, DictConfig):
        raise ConfigError(f"{key} is a section, not a setting; override one of its keys, e.g. "
                          f"{key}.{next(iter(node), 'KEY')}={value or 'VALUE'}")
    try:
        return OmegaConf.merge(merged, OmegaConf.from_dotlist([override]))
    except OmegaConfBaseException as error:
        current = OmegaConf.select(merged, key)
        raise ConfigError(f"invalid value in the override {override!r}: {_first_line(error)} "
                          f"({key} is now {current!r})") from None


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


# --- validation of a loaded configuration, before any work starts --------------------------------

_FLAG_OF = {  # configuration key -> the train.py flag that sets it, for messages
    "data.root": "--data-root", "data.img_size": "--img-size", "data.batch_size": "--batch-size",
    "trainer.devices": "--devices", "trainer.num_nodes": "--num-nodes", "trainer.strategy": "--strategy",
    "trainer.precision": "--precision", "trainer.logger": "--logger", "trainer.seed": "--seed",
    "run.runs_dir": "--runs-dir", "run.run_name": "--run-name", "classifier.arch": "--classifier",
    "classifier.max_steps": "--max-steps", "decomposition.max_steps": "--max-steps",
    "masks.max_steps": "--max-steps",
}
# Lightning's precision values (lightning_fabric.connector._PRECISION_INPUT), as strings.
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
              "32-true", "64-true", "64", "32", "16", "bf16")


def _named(key: str) -> str:
    flag = _FLAG_OF.get(key)
    return f"{flag} ({key})" if flag else key


def _lightning_names(kind: str) -> list[str] | None:
    """Lightning's registered strategies or accelerators; None when Lightning cannot be asked."""
    try:
        if kind == "strategy":
            from pytorch_lightning.strategies import StrategyRegistry
            return ["auto", *StrategyRegistry.available_strategies()]
        from pytorch_lightning.accelerators import AcceleratorRegistry
        return ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]
    except Exception:  # noqa: BLE001 - validation must not fail because Lightning changed
        return None


def check_run_name(name) -> None:
    """A run name is one plain folder name inside ``<runs-dir>/<dataset>/``."""
    text = str(name)
    if (not isinstance(name, str) or not text.strip() or text in (".", "..") or "/" in text or "\\" in text
            or "${" in text or "\0" in text):
        raise ConfigError(f"--run-name (run.run_name) must be a plain folder name (letters, digits, '-', '_', "
                          f"'.'; no '/', '..' or '${{'), not {text!r}; it names a folder inside "
                          "<runs-dir>/<dataset>/")


def _fitting_sizes(num_downsample: int) -> str:
    step = 2 ** num_downsample
    return f"{max(2 * step, 32 // step * step)} or {max(4 * step, 64 // step * step)}"


TRAINED_STAGES = ("classifier", "decomposition", "masks")
GENERATOR_STAGES = ("decomposition", "masks", "export", "evaluate")  # the stages that build the generator


def validate(cfg: Config, stage: str = "all") -> Config:
    """Check the settings that would otherwise fail deep inside a stage (or, worse, train nothing
    and succeed): counts, Trainer flags, the run name, for the stage(s) about to run (``all`` or one
    name). Raises a ``ConfigError`` naming the flag or key and the fix; returns ``cfg`` unchanged."""
    import re

    problems: list[str] = []
    counts: dict[tuple, list[str]] = {}  # (flag or key, value, low) -> keys: one message per flag
    runs = (lambda name: stage in ("all", name)) if isinstance(stage, str) else (lambda name: name in stage)

    def at_least(key: str, value, low: int, optional: bool = False) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            counts.setdefault((_FLAG_OF.get(key, key), repr(value), low), []).append(key)

    check_run_name(cfg.run.run_name)
    at_least("trainer.limit_val_batches", cfg.trainer.limit_val_batches, 1, optional=True)
    if not str(cfg.run.runs_dir or "").strip():
        problems.append("--runs-dir (run.runs_dir) must name a folder")
    d = cfg.data
    at_least("data.batch_size", d.batch_size, 1)
    at_least("data.img_size", d.img_size, 8)
    at_least("data.num_classes", d.num_classes, 2)
    at_least("data.num_workers", d.num_workers, 0)
    if d.kind == "synthetic":
        at_least("data.train_size", d.train_size, 1)
        at_least("data.val_size", d.val_size, 1)
    if d.img_channels not in (1, 3):
        problems.append(f"data.img_channels must be 1 (grey) or 3 (RGB), not {d.img_channels!r}")
    if runs("classifier"):
        if not cfg.classifier.weights:  # adopted weights are not trained: their max_steps is unused
            at_least("classifier.max_steps", cfg.classifier.max_steps, 1)
        at_least("classifier.val_every_steps", cfg.classifier.val_every_steps, 1)
        at_least("classifier.independent", cfg.classifier.independent, 0)
        at_least("classifier.independent_max_steps", cfg.classifier.independent_max_steps, 1, optional=True)
    m = cfg.decomposition
    if runs("decomposition"):
        at_least("decomposition.max_steps", m.max_steps, 1)
        at_least("decomposition.batch_size", m.batch_size, 1, optional=True)
        at_least("decomposition.val_every_steps", m.val_every_steps, 1)
        at_least("decomposition.image_every_steps", m.image_every_steps, 1)
        at_least("decomposition.r1_every", m.r1_every, 1)
        at_least("decomposition.both_cores_from", m.both_cores_from, 0, optional=True)
        at_least("decomposition.view_shift", m.view_shift, 0)
        if isinstance(m.view_shift, int) and isinstance(d.img_size, int) and m.view_shift >= d.img_size:
            problems.append(f"decomposition.view_shift must be below the image size ({d.img_size} px), not "
                            f"{m.view_shift}; a shift of 1 to 3 px is what it is for")
        if not isinstance(m.view_noise, (int, float)) or m.view_noise < 0:
            problems.append(f"decomposition.view_noise must be 0 or a positive std, not {m.view_noise!r}")
        if m.null_class is not None and not 0 <= m.null_class < d.num_classes:
            problems.append(f"decomposition.null_class must be a class index from 0 to {d.num_classes - 1} "
                            f"(data.num_classes={d.num_classes}), or null for none, not {m.null_class}")
        if m.null_class is not None and d.kind == "synthetic" and cfg.classifier.neutral_background_weight:
            problems.append("decomposition.null_class: the null class's images are the class-free backgrounds, "
                            "which a background-neutral classifier calls no class; train a plain classifier "
                            "with classifier.neutral_background_weight=0")
    if any(runs(name) for name in GENERATOR_STAGES):
        at_least("decomposition.num_branches", m.num_branches, 2)
        at_least("decomposition.num_downsample", m.num_downsample, 1)
    if (any(runs(name) for name in GENERATOR_STAGES) and isinstance(d.img_size, int)
            and isinstance(m.num_downsample, int) and m.num_downsample >= 1):
        step = 2 ** m.num_downsample
        if d.img_size % step or d.img_size // step < 2:
            fitting = [n for n in range(1, 8) if d.img_size % 2 ** n == 0 and d.img_size // 2 ** n >= 2]
            fix = (f"set decomposition.num_downsample to one of {fitting}, or --img-size (data.img_size) to a "
                   f"multiple of {step} such as {_fitting_sizes(m.num_downsample)}" if fitting else
                   f"no num_downsample fits {d.img_size} px: set --img-size (data.img_size) to a multiple of "
                   f"{step} such as {_fitting_sizes(m.num_downsample)}")
            problems.append(f"the generator cannot take {d.img_size} px images with decomposition.num_downsample="
                            f"{m.num_downsample}: the image size must be divisible by {step} and leave at least "
                            f"2 px at the bottom; {fix}")
    if runs("masks"):
        at_least("masks.max_steps", cfg.masks.max_steps, 1)
        at_least("masks.batch_size", cfg.masks.batch_size, 1, optional=True)
        at_least("masks.image_every_steps", cfg.masks.image_every_steps, 1)
        if cfg.masks.distill_schedule not in ("paper", "refine"):
            problems.append(f"masks.distill_schedule must be paper or refine, not {cfg.masks.distill_schedule!r}")
        at_least("masks.unroll_steps", cfg.masks.unroll_steps, 0)
        size = cfg.masks.unroll_step_size
        if cfg.masks.unroll_steps and (not isinstance(size, (int, float)) or not 0 < size <= 1):
            problems.append(f"masks.unroll_step_size must be a step in (0, 1] for mask entries in [0, 1], not "
                            f"{size!r}; the refinement's first lr (0.1 on the synthetic default) is what it is for")
        track = cfg.cartoonx.refine_ones_track_from
        if track is not None and (not isinstance(track, (int, float)) or not 0 <= track < 1):
            problems.append(f"cartoonx.refine_ones_track_from must be a fraction of the refinement's steps in [0, 1), "
                            f"or null for no all-ones track, not {track!r}")
    if runs("evaluate"):
        at_least("evaluation.batch_size", cfg.evaluation.batch_size, 1)
    t = cfg.trainer
    at_least("trainer.num_nodes", t.num_nodes, 1)
    at_least("trainer.cpu_threads", t.cpu_threads, 1, optional=True)
    devices = str(t.devices).strip()
    if not (devices in ("auto", "-1") or re.fullmatch(r"0*[1-9]\d*|\d+(\s*,\s*\d+)*\s*,", devices)
            or re.fullmatch(r"\d+(\s*,\s*\d+)+", devices)):
        problems.append(f"--devices (trainer.devices) must be a count (1, 8), a list of device indices (0,1 or 3,) "
                        f"or auto, not {t.devices!r}")
    if str(t.precision) not in PRECISIONS:
        problems.append(f"--precision (trainer.precision) must be one of Lightning's {list(PRECISIONS)}, "
                        f"not {t.precision!r}")
    if t.logger not in ("csv", "wandb"):
        problems.append(f"--logger (trainer.logger) must be csv or wandb, not {t.logger!r}")
    for kind, key, value in (("strategy", "trainer.strategy", t.strategy),
                             ("accelerator", "trainer.accelerator", t.accelerator)):
        known = _lightning_names(kind)
        if known is not None and str(value) not in known:
            problems.append(f"{_named(key)} must be one of Lightning's {kind} names {known}, not {value!r}")
    too_small = []
    for (name, value, low), keys in counts.items():
        named = name if name in keys else f"{name} ({', '.join(keys)})"
        too_small.append(f"{named} must be a whole number {low} or more, not {value}")
    problems = too_small + problems
    if problems:
        raise ConfigError("; ".join(problems))
    return cfg
