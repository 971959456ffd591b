"""Decomposition stage: train the DXAI generator, mapping network and discriminator (eq. 5, 14).

One iteration, for a batch of real x of class y: draw y~ != y and alpha ~ U[0, 1]^(n-1) per
sample, run the generator once on the B images with 2B styles (y and y~, one encoder pass), zero the distinct branch of
the y~ pass, alpha-blend the agnostic branches into x_hat^y and x_hat^y~, update the
discriminator, then the generator and mapping network, then their EMA copies.

Lightning counts every optimizer step in manual optimisation, so the Trainer's
``global_step`` is twice the iteration count; ``decomposition.max_steps`` counts iterations.
The stage runner (``dxai.stages.decomposition``) saves the EMA networks and the validation
metrics this module computes.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F

from dxai.config import Config, TrainerConfig
from dxai.errors import DXAIError
from dxai.explanation import heatmap_decomposition
from dxai.measures.beta_curves import beta_probabilities, neutral_auc_of_curve, uniform_kl
from dxai.measures.decomposition import (
    auc_of_curve,
    beta_correct,
    class_part_corr,
    has_class_part,
    psnr,
    top_probability,
)
from dxai.measures.ground_truth import SUM_KEYS as GT_SUM_KEYS
from dxai.measures.ground_truth import centred_energy, ground_truth_scores, ground_truth_sums
from dxai.measures.transfer import FIELDS as TRANSFER_FIELDS
from dxai.measures.transfer import transfer_scores, transfer_sums
from dxai.models import build_discriminator, build_generator, build_mapping
from dxai.nets.generator import decompose
from dxai.nets.mapping import class_styles
from dxai.normalization import Normalization
from dxai.run_folder import resume_path
from dxai.training import losses
from dxai.training.common import FrozenClassifier, ema_beta, log_image_panel, process_count, update_ema
from dxai.training.views import random_views

STAGE = "decomposition"
OPTIMIZER_STEPS_PER_ITERATION = 2
OBJECTIVES = ("paper", "neutral", "swap")


class DecompositionError(DXAIError):
    """Decomposition training that cannot go on."""


def alternative_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A class y~ != y per sample, uniform over the other classes."""
    return (labels + torch.randint_like(labels, 1, num_classes)) % num_classes


def swap_partners(labels: torch.Tensor) -> torch.Tensor:
    """Per sample, the index of the next sample (cyclically) of another class in the batch; -1 if none."""
    count = len(labels)
    if count < 2:
        return torch.full_like(labels, -1)
    index = torch.arange(count, device=labels.device)
    candidates = (index.view(-1, 1) + index[1:].view(1, -1)) % count  # B x (B - 1): i + 1, i + 2, ...
    differs = labels[candidates] != labels.view(-1, 1)
    partner = candidates.gather(1, differs.int().argmax(1, keepdim=True)).view(-1)
    return torch.where(differs.any(1), partner, -1)


def class_swap(x_hat_alt: torch.Tensor, distinct: torch.Tensor, labels: torch.Tensor,
               partner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``swap`` objective's fakes: sample i's agnostic blend x_hat^y~ (styled as its partner's class)
    plus the partner's own distinct part (fixed, no gradient), with the partner's class as their label.
    An agnostic part that keeps its own class's evidence (a whole shape, say) makes an image with two
    objects, which neither the critic nor the classifier accepts as the partner's class."""
    valid = partner >= 0
    return x_hat_alt[valid] + distinct[partner[valid]].detach(), labels[partner[valid]]


def alpha_blend(branches_y: torch.Tensor, branches_alt: torch.Tensor,
                alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5 with zero distinction (psi_1^y~ = 0); branches B x n x C x H x W, alpha B x (n - 1).

    x_hat^y  = psi_1^y + sum_i a_i psi_i^y  + sum_i (1 - a_i) psi_i^y~
    x_hat^y~ =   0     + sum_i a_i psi_i^y~ + sum_i (1 - a_i) psi_i^y
    """
    a = alpha.view(*alpha.shape, 1, 1, 1).to(branches_y.dtype)
    agnostic_y, agnostic_alt = branches_y[:, 1:], branches_alt[:, 1:]
    x_hat_y = branches_y[:, 0] + (a * agnostic_y + (1 - a) * agnostic_alt).sum(1)
    x_hat_alt = (a * agnostic_alt + (1 - a) * agnostic_y).sum(1)
    return x_hat_y, x_hat_alt


class DecompositionModule(FrozenClassifier, pl.LightningModule):
    """Generator, mapping network, discriminator, their EMA copies and the frozen classifier.

    The classifier is a submodule for device placement only: it is frozen, never optimised,
    and left out of checkpoints (the stage supplies it again on resume). The ``independent``
    classifiers only score validation (transfer neutrality) and choose the kept EMA weights
    (``select``); no loss sees them.
    """

    def __init__(self, cfg: Config, classifier: nn.Module, panel_batch: dict | None = None,
                 independent: list[nn.Module] | None = None):
        super().__init__()
        if cfg.decomposition.objective not in OBJECTIVES:
            raise DecompositionError(f"decomposition.objective must be one of {OBJECTIVES}, "
                                     f"not {cfg.decomposition.objective!r}")
        self.automatic_optimization = False
        self.cfg = cfg
        self.num_classes = cfg.data.num_classes
        self.normalization = Normalization.symmetric(cfg.data.img_channels)
        self.generator = build_generator(cfg)
        self.mapping = build_mapping(cfg, self.generator)
        self.discriminator = build_discriminator(cfg)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.mapping_ema = copy.deepcopy(self.mapping).requires_grad_(False)
        self.classifier = classifier.eval().requires_grad_(False)
        self.panel_batch = panel_batch
        self.independent = [network.eval().requires_grad_(False) for network in independent or []]
        self.metrics: dict[str, float] = {}
        # kept: the kept validation's eligibility, score and recon_psnr (``_replaces_kept``)
        self.selection: dict = {"history": [], "iteration": None, "kept": None, "state": None}

    # -- optimisation ------------------------------------------------------------------------

    def configure_optimizers(self):
        d = self.cfg.decomposition
        generator = torch.optim.Adam([{"params": self.generator.parameters(), "lr": d.lr},
                                      {"params": self.mapping.parameters(), "lr": d.mapping_lr}],
                                     betas=tuple(d.betas), weight_decay=d.weight_decay)
        discriminator = torch.optim.Adam(self.discriminator.parameters(), lr=d.disc_lr, betas=tuple(d.betas),
                                         weight_decay=d.weight_decay)
        return [generator, discriminator]

    @property
    def iteration(self) -> int:
        return self.global_step // OPTIMIZER_STEPS_PER_ITERATION

    def _weighted_total(self, terms: dict[str, torch.Tensor], weights: dict[str, float],
                        phase: str) -> torch.Tensor:
        """The weighted sum of the loss terms; a non-finite term stops training (on every DDP rank)
        before the update."""
        weighted = {name: weights[name] * value for name, value in terms.items()}
        finite = bool(torch.stack([v.detach().float() for v in weighted.values()]).isfinite().all())
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            bad = [name for name, value in weighted.items() if not torch.isfinite(value.detach())]
            culprit = (f"the {phase} loss term {bad[0]!r} is {float(terms[bad[0]])} (weight {weights[bad[0]]})"
                       if bad else f"a {phase} loss term is not finite in another DDP process")
            last = resume_path(Path(self.trainer.default_root_dir), STAGE) or "none yet"
            raise DecompositionError(
                f"decomposition iteration {self.iteration + 1}: {culprit}; training stopped before the update "
                f"and the last good checkpoint stays ({last}); lower decomposition.lr / disc_lr or the loss "
                "weights, or check the data and the classifier")
        return sum(weighted.values())

    def _discriminator_terms(self, x, y, fakes, fake_labels) -> dict[str, torch.Tensor]:
        """Eq. 13 with R1 and the KL to the classifier. R1 is lazy (StyleGAN2) with
        ``r1_every`` > 1: every n-th iteration at n times its weight; in the others the real
        and fake images go through the discriminator as one batch (it has no batch statistics)."""
        d = self.cfg.decomposition
        with_r1 = self.iteration % d.r1_every == 0
        if with_r1:
            real = x.detach().requires_grad_(True)
            real_logits, fake_logits = self.discriminator(real), self.discriminator(fakes.detach())
        else:
            real_logits, fake_logits = self.discriminator(torch.cat([x, fakes.detach()])).split([len(x), len(fakes)])
        real_head = losses.select_head(real_logits, y)
        with torch.no_grad():
            classifier_logits = self.classifier(x)
        terms = {"real": losses.adversarial_loss(real_head, real=True),
                 "fake": losses.adversarial_loss(losses.select_head(fake_logits, fake_labels), real=False),
                 "kld": losses.kld_loss(real_logits, classifier_logits)}
        weights = {"real": 1.0, "fake": 1.0, "kld": d.lambda_kld, "r1": d.lambda_r1 * d.r1_every}
        if with_r1:
            terms["r1"] = losses.r1_penalty(real_head, real)
        terms["total"] = self._weighted_total(terms, weights, "discriminator")
        return terms

    def _critic_inputs(self, y, y_alt, x_hat_y, x_hat_alt, swap=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The fakes the critic judges and their classes: both blends for ``paper``, only x_hat^y
        for ``neutral`` (x_hat^y~ is meant to look like no class, so no class head should pass it),
        x_hat^y and the class swaps for ``swap``."""
        objective = self.cfg.decomposition.objective
        if objective == "neutral":
            return x_hat_y, y
        if objective == "swap":
            return torch.cat([x_hat_y, swap[0]]), torch.cat([y, swap[1]])
        return torch.cat([x_hat_y, x_hat_alt]), torch.cat([y, y_alt])

    def _class_term(self, logits, y, y_alt, swap=None) -> torch.Tensor:
        """Eq. 6 for ``paper``; for ``neutral`` (definition 1) x_hat^y~, without psi_1, is pushed to the
        classifier's uniform distribution instead of to the class y~ (to the null class, where there is
        one: there, no class evidence is what it means); ``swap`` adds the class swaps' cross-entropy
        toward their partner's class."""
        batch = len(y)
        d = self.cfg.decomposition
        if d.objective == "paper":
            return losses.class_fake_loss(logits[:batch], y, logits[batch:], y_alt)
        agnostic_logits = logits[batch:2 * batch]
        neutral = (losses.uniform_kl(agnostic_logits) if d.null_class is None
                   else F.cross_entropy(agnostic_logits, torch.full_like(y, d.null_class)))
        term = F.cross_entropy(logits[:batch], y) + neutral
        if d.objective == "swap" and len(swap[1]):
            term = term + d.lambda_swap * F.cross_entropy(logits[2 * batch:], swap[1])
        return term

    def _generator_terms(self, x, y, y_alt, branches, features, x_hat_y, x_hat_alt,
                         swap=None) -> dict[str, torch.Tensor]:
        d = self.cfg.decomposition
        batch = len(x)
        judged = torch.cat([x_hat_y, x_hat_alt, *([swap[0]] if swap else [])])
        classifier_logits = self.classifier(random_views(judged, d.view_shift, d.view_flip, d.view_noise))
        fakes, fake_labels = self._critic_inputs(y, y_alt, x_hat_y, x_hat_alt, swap)
        share = None
        if d.objective == "swap":  # x_hat^y's samples count 1 each, the class swaps lambda_swap each
            share = torch.ones(len(fakes), device=fakes.device, dtype=fakes.dtype)
            share[batch:] = d.lambda_swap
        terms = {
            "adv": losses.adversarial_loss(losses.select_head(self.discriminator(fakes), fake_labels), real=True,
                                           weight=share),
            "cf": self._class_term(classifier_logits, y, y_alt, swap),
            "rec": losses.reconstruction_loss(x, x_hat_y, x_hat_alt),
            "dr": losses.dis_rec_loss(x, x_hat_y, branches[:batch, 0]),
            "orth": losses.orthogonality_loss(features, self.generator.num_branches),
        }
        weights = {"adv": d.lambda_adv, "cf": d.lambda_cf, "rec": d.lambda_rec, "dr": d.lambda_dr,
                   "orth": d.lambda_orth}
        if d.null_class is not None:
            terms["null"] = losses.null_distinct_loss(branches[:batch, 0], y == d.null_class)
            weights["null"] = d.lambda_null
        terms["total"] = self._weighted_total(terms, weights, "generator")
        return terms

    def training_step(self, batch, batch_idx):
        d = self.cfg.decomposition
        opt_g, opt_d = self.optimizers()
        x, y = batch["image"], batch["label"]
        batch_size = len(x)
        y_alt = alternative_labels(y, self.num_classes)
        if d.objective == "swap":  # the alternative class is the swap partner's, where there is one
            partner = swap_partners(y)
            y_alt = torch.where(partner >= 0, y[partner.clamp_min(0)], y_alt)
        alpha = torch.rand(batch_size, self.generator.num_branches - 1, device=x.device)
        z = torch.randn(2 * batch_size, d.latent_dim, device=x.device)
        styles = self.mapping(z, torch.cat([y, y_alt]))
        branches, features = self.generator(x, styles, return_features=True)  # one encoder pass, two styles
        x_hat_y, x_hat_alt = alpha_blend(branches[:batch_size], branches[batch_size:], alpha)
        swap = class_swap(x_hat_alt, branches[:batch_size, 0], y, partner) if d.objective == "swap" else None

        self.toggle_optimizer(opt_d)
        d_terms = self._discriminator_terms(x, y, *self._critic_inputs(y, y_alt, x_hat_y, x_hat_alt, swap))
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_terms["total"])
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        self.toggle_optimizer(opt_g)
        g_terms = self._generator_terms(x, y, y_alt, branches, features, x_hat_y, x_hat_alt, swap)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_terms["total"])
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        beta = ema_beta(d.ema_beta, self.iteration)
        update_ema(self.generator_ema, self.generator, beta)
        update_ema(self.mapping_ema, self.mapping, beta)
        self.log_dict({f"train_d/{k}": v.detach() for k, v in d_terms.items()}, batch_size=batch_size)
        self.log_dict({f"train_g/{k}": v.detach() for k, v in g_terms.items()}, batch_size=batch_size)
        self.log_dict({"d": d_terms["total"].detach(), "g": g_terms["total"].detach(), "rec": g_terms["rec"].detach()},
                      prog_bar=True, logger=False, batch_size=batch_size)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.iteration % self.cfg.decomposition.image_every_steps == 0:
            self.log_panel()

    def on_train_end(self):
        self.log_panel()

    # -- watching it train ---------------------------------------------------------------------

    def inference_styles(self) -> torch.Tensor:
        return class_styles(self.mapping_ema, self.num_classes)

    @torch.no_grad()
    def log_panel(self) -> None:
        """x | x_hat | psi_distinct | psi_agnostic | psi_1..psi_n for fixed validation images."""
        if self.panel_batch is None or not self.trainer.is_global_zero:
            return
        x = self.panel_batch["image"].to(self.device)
        labels = self.panel_batch["label"].to(self.device)
        branches = decompose(self.generator_ema, self.inference_styles(), x, labels)
        unit = self.normalization
        columns = [unit.denormalize(x), unit.denormalize(branches.sum(1)), 0.5 + unit.unscale(branches[:, 0]),
                   unit.denormalize(branches[:, 1:].sum(1))]
        columns += [0.5 + unit.unscale(branches[:, k]) for k in range(branches.shape[1])]
        grid = torch.stack(columns, 1).flatten(0, 1)
        titles = ["x", "x_hat", "distinct", "agnostic"] + [f"psi_{k + 1}" for k in range(branches.shape[1])]
        log_image_panel(self.trainer, "decomposition/panel", grid, titles, "iteration", self.iteration,
                        f"iteration {self.iteration}, style of the true class; x_hat = sum of branches; "
                        "signed parts (distinct, branches) shown as 0.5 + psi in [0, 1] units (grey = 0)")

    # -- validation: the metrics of metrics.json -----------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._styles = self.inference_styles()
        self._sums: dict[str, torch.Tensor] = {}
        self.independent = [network.to(self.device) for network in self.independent]

    def _add(self, name: str, value: torch.Tensor) -> None:
        value = value.detach().double()
        self._sums[name] = self._sums[name] + value if name in self._sums else value

    def validation_step(self, batch, batch_idx):
        x, y = batch["image"], batch["label"]
        unit = self.normalization
        predicted = self.classifier(x).argmax(1)
        branches = decompose(self.generator_ema, self._styles, x, predicted)
        distinct, agnostic = branches[:, 0], branches[:, 1:].sum(1)
        reconstruction = decompose(self.generator_ema, self._styles, x, y).sum(1)
        self._add("count", torch.tensor(float(len(x)), device=x.device))
        self._add("recon_psnr", psnr(unit.denormalize(reconstruction).clamp(0, 1), unit.denormalize(x)).sum())
        probabilities = beta_probabilities(self.classifier, x, distinct)
        self._add("beta_correct", (probabilities.argmax(2) == y).sum(1))
        self._add("neutral_kl", uniform_kl(probabilities).sum(1))
        self._add("distinct_energy_num", distinct.double().pow(2).flatten(1).sum())
        self._add("distinct_energy_den", centred_energy(x).sum())
        heatmap = torch.rand(len(x), 1, *x.shape[-2:], generator=torch.Generator().manual_seed(batch_idx))
        random_distinct, _ = heatmap_decomposition(x, heatmap.to(x.device))
        self._add("random_beta_correct", beta_correct(self.classifier, x, random_distinct, y))
        self._add("agnostic_max_prob", top_probability(self.classifier, agnostic).sum())
        self._add("agnostic_true_prob", self.classifier(agnostic).softmax(1).gather(1, y.view(-1, 1)).sum())
        if self.independent:
            self._add("transfer", transfer_sums(self.independent, agnostic, y))
            self._add("transfer_residual", transfer_sums(self.independent, x - distinct, y))
            if "background" in batch:
                self._add("transfer_background", transfer_sums(self.independent, batch["background"], y))
            if self.cfg.decomposition.null_class is not None:  # their probability of the null class on it
                null = torch.full_like(y, self.cfg.decomposition.null_class)
                self._add("transfer_null", transfer_sums(self.independent, agnostic, null))
        if self.cfg.decomposition.null_class is not None:  # the null class's images should have no distinct part
            is_null = y == self.cfg.decomposition.null_class
            self._add("null_distinct_num", distinct[is_null].double().pow(2).sum())
            self._add("null_distinct_den", centred_energy(x[is_null]).sum())
        if "class_part" in batch:
            for key, value in ground_truth_sums(x, distinct, agnostic, batch["class_part"], batch["background"],
                                                unit).items():
                self._add(f"gt_{key}", value)
            self._add("gt_agnostic_corr", class_part_corr(agnostic, batch["class_part"]).sum())
            corr = class_part_corr(distinct, batch["class_part"])
            classes = F.one_hot(y[has_class_part(batch["class_part"])], self.num_classes).to(corr.dtype)
            self._add("gt_distinct_corr_by_class", classes.T @ corr)
            self._add("gt_class_count", classes.sum(0))
            self._add("gt_background_max_prob", top_probability(self.classifier, batch["background"]).sum())

    def on_validation_epoch_end(self) -> None:
        sums = {k: self.trainer.strategy.reduce(v, reduce_op="sum") for k, v in self._sums.items()}
        count = float(sums["count"])
        accuracy = (sums["beta_correct"] / count).tolist()
        metrics = {"recon_psnr": float(sums["recon_psnr"]) / count,
                   "beta_auc": auc_of_curve(accuracy),
                   "beta_accuracy": [round(a, 4) for a in accuracy],
                   "neutral_auc": neutral_auc_of_curve((sums["neutral_kl"] / count).tolist()),
                   "distinct_energy": float(sums["distinct_energy_num"] / sums["distinct_energy_den"]),
                   "random_beta_auc": auc_of_curve((sums["random_beta_correct"] / count).tolist()),
                   "agnostic_max_prob": float(sums["agnostic_max_prob"]) / count,
                   "agnostic_true_prob": float(sums["agnostic_true_prob"]) / count}
        for prefix in ("transfer", "transfer_residual", "transfer_background"):
            if prefix in sums:
                scores = transfer_scores(sums[prefix], count)
                metrics.update({f"{prefix}_{name}": scores[name] for name in TRANSFER_FIELDS})
                metrics[f"{prefix}_by_classifier"] = scores["by_classifier"]
        if "transfer_null" in sums:
            metrics["transfer_null_prob"] = transfer_scores(sums["transfer_null"], count)["true_prob"]
        if "null_distinct_num" in sums:
            energy = sums["null_distinct_num"] / sums["null_distinct_den"].clamp_min(1e-12)
            metrics["null_distinct_energy"] = float(energy)
        if "gt_count" in sums:
            scores = ground_truth_scores({key: sums[f"gt_{key}"] for key in GT_SUM_KEYS})
            metrics.update({f"gt_{name}": value for name, value in scores.items()})
            present = max(float(sums["gt_class_count"].sum()), 1)
            metrics["gt_agnostic_corr"] = float(sums["gt_agnostic_corr"]) / present
            metrics["gt_distinct_corr_by_class"] = [
                round(float(total / count), 4) if count else None
                for total, count in zip(sums["gt_distinct_corr_by_class"], sums["gt_class_count"])]
            metrics["gt_background_max_prob"] = float(sums["gt_background_max_prob"]) / count
        self.metrics = metrics
        self.log_dict({f"val/{k}": v for k, v in metrics.items() if isinstance(v, float)}, sync_dist=False)
        if self.trainer.state.fn == "fit":
            self._consider_for_selection(metrics)

    # -- the kept weights: chosen without ground truth -------------------------------------------

    def _selection_rule(self) -> str:
        """``_selection_score`` in words, for metrics.json."""
        if self.cfg.decomposition.null_class is None:
            return "lowest transfer_max_prob"
        return "lowest 1 - transfer_null_prob + null_distinct_energy"

    def _selection_score(self, metrics: dict) -> float:
        """What the kept weights minimise: the independent classifiers' top probability on psi_agnostic
        (1/c is neutral) or, with a null class, their probability that psi_agnostic is not of it plus the
        distinct part's share of the null class's images (both 0 when ideal; the first alone saturates)."""
        if self.cfg.decomposition.null_class is None:
            return metrics["transfer_max_prob"]
        return 1 - metrics["transfer_null_prob"] + metrics["null_distinct_energy"]

    def _replaces_kept(self, candidate: dict) -> bool:
        """Whether a validation (``eligible``: recon_psnr >= ``select_min_psnr``, ``score``, ``psnr``)
        replaces the kept one: an eligible one replaces an ineligible one, or one whose score is worse by
        more than ``decomposition.select_tolerance``, and within that tolerance the better reconstruction
        wins (a difference in neutrality below the tolerance is sampling noise, not a better part); before
        any is eligible, the best reconstruction."""
        kept = self.selection["kept"]
        if kept is None or candidate["eligible"] != kept["eligible"]:
            return kept is None or candidate["eligible"]
        if not candidate["eligible"]:
            return candidate["psnr"] > kept["psnr"]
        tolerance = self.cfg.decomposition.select_tolerance
        return (candidate["score"] < kept["score"] - tolerance
                or (candidate["score"] <= kept["score"] + tolerance and candidate["psnr"] > kept["psnr"]))

    def _consider_for_selection(self, metrics: dict) -> None:
        """Keep a copy of the EMA networks if this validation ``_replaces_kept`` by ``_selection_score``.
        Without independent classifiers the last weights are kept."""
        if "transfer_max_prob" not in metrics:
            return
        candidate = {"eligible": metrics["recon_psnr"] >= self.cfg.decomposition.select_min_psnr,
                     "score": self._selection_score(metrics), "psnr": metrics["recon_psnr"]}
        shown = ("transfer_max_prob", "transfer_true_prob", "transfer_argmax_true", "transfer_null_prob",
                 "null_distinct_energy", "agnostic_max_prob", "recon_psnr")
        self.selection["history"].append({"iteration": self.iteration, "eligible": candidate["eligible"],
                                          **{k: round(metrics[k], 4) for k in shown if k in metrics}})
        if self._replaces_kept(candidate):
            self.selection.update(iteration=self.iteration, kept=candidate, state={
                f"{name}.{key}": value.detach().cpu().clone()
                for name in ("generator_ema", "mapping_ema")
                for key, value in getattr(self, name).state_dict().items()})

    def restore_selected(self) -> dict:
        """Load the selected EMA weights (if any) and say which they are, for metrics.json."""
        state = self.selection["state"]
        if state is None:
            return {"selected_iteration": self.iteration, "selection": "last (no independent classifiers)"}
        for name in ("generator_ema", "mapping_ema"):
            prefix = f"{name}."
            getattr(self, name).load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        return {"selected_iteration": self.selection["iteration"],
                "selection": f"{self._selection_rule()} with recon_psnr >= {self.cfg.decomposition.select_min_psnr} "
                             f"(within {self.cfg.decomposition.select_tolerance}: the higher recon_psnr)",
                "selection_history": self.selection["history"]}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["dxai_selection"] = self.selection

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.selection = checkpoint.get("dxai_selection", self.selection)
        rank = self.selection.pop("rank", None)  # checkpoints written before select_tolerance
        if rank is not None:
            entry = next(e for e in self.selection["history"] if e["iteration"] == self.selection["iteration"])
            self.selection["kept"] = {"eligible": rank[0] == 0, "score": rank[1], "psnr": entry["recon_psnr"]}
        self.selection.setdefault("kept", None)


def gan_strategy(trainer: TrainerConfig) -> str:
    """The Trainer strategy with DDP told about unused parameters.

    Each of the two backward passes of an iteration leaves the other network's parameters
    unused, which plain DDP would wait for forever; ``ddp`` becomes
    ``ddp_find_unused_parameters_true`` (also when ``auto`` would pick DDP).
    """
    strategy = trainer.strategy
    if strategy.startswith("ddp") and "find_unused_parameters" not in strategy:
        return f"{strategy}_find_unused_parameters_true"
    if strategy == "auto" and process_count(trainer) > 1:
        return "ddp_find_unused_parameters_true"
    return strategy
