"""Masks stage: train the amortized CartoonX mask predictor, then evaluate it against CartoonX.

Amortized optimisation: the predictor's mask for each training image is scored with the RDE
objective of CartoonX itself (``RDEObjective``: obfuscations with adaptive noise drawn fresh
every step, distortion of the frozen classifier's probability of the predicted class,
``lam`` times the normalised l1 norm), averaged over the batch. No precomputed masks are
needed.

``lam`` ramps linearly from 0 to ``cartoonx.lam`` over the first ``masks.lam_warmup`` of the
steps, then stays there: the objective is non-convex, and a mask whose fine-scale
coefficients are all dropped is a local minimum (each alone lowers the distortion by less
than its l1 cost; kept together, with the low-pass, they carry the decision). At full
``lam`` from the start, the shared weights of the predictor drop every entry at once, faster
than its features learn which to keep, and it collapses onto such masks. The ramp is a
continuation: the masks thin out slowly, while the distortion still tells the predictor what
matters, as CartoonX's own slow descent from the all-ones mask does. With ``masks.distill``
the predictor also fits CartoonX masks optimised once on a cached training subset.

The results are ``<run>/checkpoints/masks/mask_predictor.safetensors`` (read it back with
``load_mask_predictor``), the ``masks`` section of metrics.json and the loss-curve plot of
``dxai.evaluation.masks``.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from safetensors.torch import load_file, save
from torch import nn

from dxai.config import Config
from dxai.data.datamodule import DXAIDataModule
from dxai.data.transforms import Normalization
from dxai.errors import DXAIError
from dxai.evaluation.masks import CurveSettings, evaluate_mask_predictor
from dxai.explain.cartoonx import CartoonX
from dxai.explain.rde import RDEObjective
from dxai.io import atomic_write_bytes, read_metrics, update_metrics
from dxai.nets.mask_predictor import MaskPredictor
from dxai.training.classifier import load_classifier
from dxai.training.common import checkpoint_dir, log_image_panel, make_trainer, resume_path
from dxai.wavelets import flatten_mask

STAGE = "masks"


class MaskPredictorError(DXAIError):
    """Mask predictor weights missing or not fitting the configuration."""


def ramped_lam(step: int, warmup_steps: float, lam: float) -> float:
    """The l1 weight of a training step: 0 at step 0, linear up to ``lam`` at ``warmup_steps``."""
    return lam * min(1.0, step / warmup_steps) if warmup_steps > 0 else lam


def build_mask_predictor(cfg: Config) -> MaskPredictor:
    m, c = cfg.masks, cfg.cartoonx
    return MaskPredictor(cfg.data.img_size, cfg.data.img_channels, cfg.data.num_classes, c.levels, c.wavelet,
                         c.mode, m.base_channels, m.max_channels, m.initial_keep)


def build_cartoonx(cfg: Config, classifier: nn.Module, num_samples: int | None = None,
                   mask_predictor: MaskPredictor | None = None) -> CartoonX:
    """CartoonX with the run's settings for a classifier taking [-1, 1] images."""
    c = cfg.cartoonx
    return CartoonX(classifier, normalization=Normalization.symmetric(cfg.data.img_channels), levels=c.levels,
                    wavelet=c.wavelet, mode=c.mode, lam=c.lam, lr=c.lr, steps=c.steps,
                    num_samples=num_samples or c.num_samples, distortion=c.distortion, mask_predictor=mask_predictor)


def predictor_path(run_dir: Path) -> Path:
    return checkpoint_dir(run_dir, STAGE) / "mask_predictor.safetensors"


def distill_targets_path(run_dir: Path) -> Path:
    return checkpoint_dir(run_dir, STAGE) / "distill_targets.safetensors"


def load_mask_predictor(cfg: Config, run_dir: Path) -> MaskPredictor:
    """The trained mask predictor, frozen and in eval mode (images in [0, 1] and classes in,
    CartoonX masks out)."""
    path = predictor_path(run_dir)
    if not path.is_file():
        raise MaskPredictorError(f"{path} is missing; run the masks stage first (python train.py --stage masks)")
    predictor = build_mask_predictor(cfg)
    try:
        predictor.load_state_dict(load_file(str(path)))
    except RuntimeError as error:
        raise MaskPredictorError(f"{path} does not fit the masks and cartoonx settings of this configuration: "
                                 f"{str(error).splitlines()[0]}") from None
    return predictor.eval().requires_grad_(False)


class MaskModule(pl.LightningModule):
    """The mask predictor trained on the RDE objective of the frozen classifier.

    The classifier (wrapped to take [0, 1] images) is a submodule for device placement only:
    frozen, kept in eval mode and left out of checkpoints. ``distill`` holds optional targets:
    ``images`` (N, C, H, W) in [0, 1], ``target`` (N,) and ``masks`` (N, K) flat CartoonX masks.
    """

    def __init__(self, cfg: Config, classifier: nn.Module, panel_images: torch.Tensor,
                 distill: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.cfg = cfg
        self.normalization = Normalization.symmetric(cfg.data.img_channels)
        self.predictor = build_mask_predictor(cfg)
        self.cartoonx = build_cartoonx(cfg, classifier.eval().requires_grad_(False), cfg.masks.num_samples)
        self.classifier = self.cartoonx.classifier
        self.representation = self.cartoonx.representation((cfg.data.img_size, cfg.data.img_size))
        self.register_buffer("panel_images", panel_images, persistent=False)
        self.distilling = distill is not None
        for name, tensor in (distill or {}).items():
            self.register_buffer(f"distill_{name}", tensor, persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.classifier.eval()
        return self

    def configure_optimizers(self):
        return torch.optim.Adam(self.predictor.parameters(), lr=self.cfg.masks.lr)

    def rde_terms(self, images: torch.Tensor, lam: float):
        """Per-image RDE loss terms of the predicted masks of [0, 1] images, with fresh noise."""
        objective = RDEObjective(self.classifier, images, self.representation, None, lam,
                                 self.cfg.masks.num_samples, self.cfg.cartoonx.distortion)
        return objective.loss(self.predictor(images, objective.target))

    def distill_loss(self, batch_size: int) -> torch.Tensor:
        """Mean absolute difference to the cached CartoonX masks of a random subset."""
        rows = torch.randint(len(self.distill_images), (batch_size,), device=self.device)
        predicted = self.predictor(self.distill_images[rows], self.distill_target[rows])
        return (flatten_mask(predicted) - self.distill_masks[rows]).abs().mean()

    def training_step(self, batch, batch_idx):
        images = self.normalization.denormalize(batch["image"]).clamp(0, 1)
        m = self.cfg.masks
        lam = ramped_lam(self.global_step, m.lam_warmup * m.max_steps, self.cfg.cartoonx.lam)
        terms = self.rde_terms(images, lam)
        loss = terms.loss.mean()
        logs = {"train/loss": loss.detach(), "train/distortion": terms.distortion.mean().detach(),
                "train/l1": terms.l1.mean().detach(), "train/lam": lam}
        if self.distilling:
            distill = self.distill_loss(len(images))
            loss = loss + self.cfg.masks.distill_weight * distill
            logs["train/distill"] = distill.detach()
        self.log_dict(logs, prog_bar=True, batch_size=len(images))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.global_step % self.cfg.masks.image_every_steps == 0:
            self.log_panel()

    def on_train_end(self):
        self.log_panel()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("classifier.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"].update({f"classifier.{k}": v for k, v in self.classifier.state_dict().items()})

    @torch.no_grad()
    def log_panel(self) -> None:
        """image | predicted cartoon for fixed validation images (and the distillation subset)."""
        if not self.trainer.is_global_zero:
            return
        was_training = self.predictor.training
        self.predictor.eval()
        rows = [self.panel_images]
        if self.distilling:
            rows.append(self.distill_images[:len(self.panel_images)])
        columns = []
        for images in rows:
            target = self.classifier(images).argmax(1)
            cartoon = self.cartoonx.visualize(images, self.predictor(images, target), self.representation)
            columns.append(torch.stack([images, cartoon.expand_as(images)], 1))
        self.predictor.train(was_training)
        log_image_panel(self.trainer, "masks/panel", torch.cat(columns).flatten(0, 1), ["image", "cartoon"],
                        caption=f"step {self.global_step}; one-pass cartoon of the predictor for validation "
                                "images, then the distillation subset when distilling")


def panel_images(dataset, count: int, normalization: Normalization) -> torch.Tensor:
    """The first ``count`` images of a data set, in [0, 1]."""
    images = torch.stack([dataset[i]["image"] for i in range(min(count, len(dataset)))])
    return normalization.denormalize(images).clamp(0, 1)


def distill_targets(cfg: Config, classifier: nn.Module, dataset, run_dir: Path) -> dict[str, torch.Tensor]:
    """CartoonX masks of the first ``masks.distill_images`` training images, optimised once and
    cached in the stage's checkpoint folder."""
    path = distill_targets_path(run_dir)
    if path.is_file():
        return load_file(str(path))
    m = cfg.masks
    images = panel_images(dataset, m.distill_images, Normalization.symmetric(cfg.data.img_channels))
    result = build_cartoonx(cfg, classifier, m.eval_num_samples).attribute(images, steps=m.distill_steps,
                                                                            seed=m.eval_seed)
    targets = {"images": images, "target": result.target, "masks": result.flat_masks}
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in targets.items()}))
    return targets


def save_predictor(predictor: MaskPredictor, run_dir: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in predictor.state_dict().items()}
    atomic_write_bytes(predictor_path(run_dir), save(state))


def curve_settings(cfg: Config) -> CurveSettings:
    m = cfg.masks
    return CurveSettings(steps=m.eval_steps, predictor_steps=m.eval_predictor_steps, num_samples=m.eval_num_samples,
                         loss_samples=m.eval_loss_samples, every=m.eval_every, predictor_every=m.eval_predictor_every,
                         seed=m.eval_seed)


def is_done(cfg: Config, run_dir: Path) -> bool:
    return predictor_path(run_dir).is_file() and "one_pass_loss_ratio" in read_metrics(run_dir).get(STAGE, {})


def run(cfg: Config, run_dir: Path) -> dict:
    """Train (or resume) the mask predictor, save it, evaluate it against CartoonX."""
    m = cfg.masks
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    data = DXAIDataModule(cfg.data, batch_size=m.batch_size)
    classifier = load_classifier(cfg, run_dir)
    normalization = Normalization.symmetric(cfg.data.img_channels)
    distill = distill_targets(cfg, classifier, data.train_set, run_dir) if m.distill else None
    module = MaskModule(cfg, classifier, panel_images(data.val_set, m.num_panel_images, normalization), distill)
    trainer = make_trainer(cfg, run_dir, STAGE, max_steps=m.max_steps,
                           val_every_steps=min(m.image_every_steps, m.max_steps) or None, monitor=None)
    trainer.fit(module, train_dataloaders=data.train_dataloader(), ckpt_path=resume_path(run_dir, STAGE))
    if not trainer.is_global_zero:
        return {}
    device = trainer.strategy.root_device
    predictor = module.predictor.eval().requires_grad_(False)
    save_predictor(predictor, run_dir)
    images = panel_images(data.val_set, m.eval_images, normalization).to(device)
    cartoonx = build_cartoonx(cfg, classifier.to(device), m.eval_num_samples, predictor.to(device))
    results = evaluate_mask_predictor(cartoonx, images, curve_settings(cfg), run_dir / "report")
    panel = results.pop("panel")
    log_image_panel(trainer, "masks/evaluation", panel[:m.num_panel_images].flatten(0, 1),
                    ["image", "one pass", f"ones, {m.eval_steps}", f"pred., {m.eval_predictor_steps}"],
                    caption="the predictor's one-pass cartoon, CartoonX from all-ones and CartoonX started "
                            "from the predictor's mask (optimisation steps after the comma)")
    results["train_steps"] = trainer.global_step
    results["distill"] = m.distill
    update_metrics(run_dir, STAGE, results)
    return {k: results[k] for k in ("one_pass_loss_ratio", "steps_to_optimum", "one_pass_ms_per_image",
                                    "cartoonx_s_per_image")}
