"""The amortized CartoonX mask predictor as a LightningModule, trained on the RDE objective.

Amortized optimisation: the predictor's mask for each training image is scored with the RDE
objective of CartoonX itself (``RDEObjective``: obfuscations with adaptive noise drawn fresh
every step, distortion of the frozen classifier's probability of the predicted class,
``lam`` times the normalised l1 norm), averaged over the batch. No precomputed masks are
needed.

``lam`` ramps linearly from 0 to ``cartoonx.lam`` (or ``masks.lam``) over the first
``masks.lam_warmup`` of the steps, then stays there: the objective is non-convex, and a mask whose fine-scale
coefficients are all dropped is a local minimum (each alone lowers the distortion by less
than its l1 cost; kept together, with the low-pass, they carry the decision). At full
``lam`` from the start, the shared weights of the predictor drop every entry at once, faster
than its features learn which to keep, and it collapses onto such masks. The ramp is a
continuation: the masks thin out slowly, while the distortion still tells the predictor what
matters, as CartoonX's own slow descent from the all-ones mask does. With ``masks.distill``
the predictor also fits CartoonX masks optimised once on a cached training subset.

Semi-amortized training (``masks.unroll_steps`` K > 0): the predictor is used as the start of a
refinement, so it is also scored after K steps of that refinement run from its masks. The steps
are signed-gradient steps of ``masks.unroll_step_size`` (what Adam's first steps are), so
their Jacobian is the identity (straight through the clamp to [0, 1]): the unrolled loss needs
K extra forward and backward passes, no second derivatives.

The stage runner (``dxai.stages.masks``) trains this module, saves the predictor and evaluates it.
"""

from __future__ import annotations

import copy

import pytorch_lightning as pl
import torch
from torch import nn

from dxai.config import Config
from dxai.explain.rde import RDELoss, RDEObjective
from dxai.models import build_cartoonx, build_mask_predictor
from dxai.normalization import Normalization
from dxai.training.common import FrozenClassifier, ema_beta, log_image_panel, update_ema
from dxai.wavelets import flatten_mask

STAGE = "masks"


def unrolled_masks(objective: RDEObjective, masks: list[torch.Tensor], steps: int,
                   step_size: float) -> list[torch.Tensor]:
    """``masks`` after ``steps`` signed-gradient steps on ``objective`` (fresh noise each), each
    entry differentiable w.r.t. its start with derivative 1."""
    for _ in range(steps):
        detached = [band.detach().requires_grad_(True) for band in masks]
        gradients = torch.autograd.grad(objective.loss(detached).loss.sum(), detached)
        moved = [band - step_size * gradient.sign() for band, gradient in zip(masks, gradients, strict=True)]
        masks = [band + (band.clamp(0, 1) - band).detach() for band in moved]
    return masks


def ramped_lam(step: int, warmup_steps: float, lam: float) -> float:
    """The l1 weight of a training step: 0 at step 0, linear up to ``lam`` at ``warmup_steps``."""
    return lam * min(1.0, step / warmup_steps) if warmup_steps > 0 else lam


class MaskModule(FrozenClassifier, pl.LightningModule):
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
        self.predictor_ema = copy.deepcopy(self.predictor).requires_grad_(False) if cfg.masks.ema_beta > 0 else None
        self.cartoonx = build_cartoonx(cfg, classifier.eval().requires_grad_(False), cfg.masks.num_samples)
        self.classifier = self.cartoonx.classifier
        self.representation = self.cartoonx.representation((cfg.data.img_size, cfg.data.img_size))
        self.register_buffer("panel_images", panel_images, persistent=False)
        self.distilling = distill is not None
        for name, tensor in (distill or {}).items():
            self.register_buffer(f"distill_{name}", tensor, persistent=False)

    def configure_optimizers(self):
        # fused: one kernel over all the small parameters of the predictor (a step 3.5 -> 1.3 ms on a CPU)
        return torch.optim.Adam(self.predictor.parameters(), lr=self.cfg.masks.lr, fused=True)

    def rde_terms(self, images: torch.Tensor, lam: float):
        """Per-image RDE loss terms of the predicted masks of [0, 1] images, with fresh noise."""
        m = self.cfg.masks
        objective = RDEObjective(self.classifier, images, self.representation, None, lam, m.num_samples,
                                 self.cfg.cartoonx.distortion)
        masks = self.predictor(images, objective.target)
        terms = objective.loss(masks)
        if m.unroll_steps > 0:
            unrolled = objective.loss(unrolled_masks(objective, masks, m.unroll_steps, m.unroll_step_size))
            terms = RDELoss((terms.distortion + unrolled.distortion) / 2, (terms.l1 + unrolled.l1) / 2,
                            (terms.loss + unrolled.loss) / 2)
        return terms

    def distill_loss(self, batch_size: int) -> torch.Tensor:
        """Mean absolute difference to the cached CartoonX masks of a random subset."""
        rows = torch.randint(len(self.distill_images), (batch_size,), device=self.device)
        predicted = self.predictor(self.distill_images[rows], self.distill_target[rows])
        return (flatten_mask(predicted) - self.distill_masks[rows]).abs().mean()

    def training_step(self, batch, batch_idx):
        images = self.normalization.denormalize(batch["image"]).clamp(0, 1)
        m = self.cfg.masks
        final_lam = self.cfg.cartoonx.lam if m.lam is None else m.lam
        lam = ramped_lam(self.global_step, m.lam_warmup * m.max_steps, final_lam)
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

    @property
    def trained_predictor(self) -> nn.Module:
        """The predictor that the stage keeps: the EMA of the weights when ``masks.ema_beta`` > 0."""
        return self.predictor if self.predictor_ema is None else self.predictor_ema

    def optimizer_step(self, *args, **kwargs):
        """The step, then the EMA (here, not in ``on_train_batch_end``: checkpoints are written before that)."""
        super().optimizer_step(*args, **kwargs)
        if self.predictor_ema is not None:
            update_ema(self.predictor_ema, self.predictor, ema_beta(self.cfg.masks.ema_beta, self.global_step))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints of a run with the other ``masks.ema_beta`` resume too: without an EMA in them, it
        starts at their weights; with one that is no longer wanted, it is left out."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        has_ema = any(key.startswith("predictor_ema.") for key in state)
        if self.predictor_ema is not None and not has_ema:
            state.update({f"predictor_ema.{key.removeprefix('predictor.')}": value
                          for key, value in list(state.items()) if key.startswith("predictor.")})
        elif self.predictor_ema is None and has_ema:
            for key in [key for key in state if key.startswith("predictor_ema.")]:
                del state[key]

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.global_step % self.cfg.masks.image_every_steps == 0:
            self.log_panel()

    def on_train_end(self):
        self.log_panel()

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
