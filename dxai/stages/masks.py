"""Masks stage: train the amortized CartoonX mask predictor, then evaluate it against CartoonX.

The results are ``<run>/checkpoints/masks/mask_predictor.safetensors`` (read it back with
``dxai.run_folder.load_mask_predictor``), the ``masks`` section of metrics.json, the
loss-curve plots of ``dxai.evaluation.masks`` and its per-image table ``report/masks.md``. The
evaluation's reference and control are cached in ``checkpoints/masks/reference_<key>.safetensors``;
on a single CPU process a second process computes them, started by the pipeline as soon as the
classifier exists (``start_early``: beside the decomposition stage, on the core it leaves idle) or
else when this stage starts; a rerun of the stage reads the cache.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from safetensors.torch import load_file
from torch import nn

from dxai.config import Config
from dxai.data.batches import first_images
from dxai.data.datamodule import DXAIDataModule
from dxai.evaluation.masks import (
    ProtocolSettings,
    evaluate_mask_predictor,
    per_image_markdown,
    reference_key,
    refine_schedule,
    start_reference,
)
from dxai.io import atomic_write_text, read_metrics, update_metrics
from dxai.models import build_cartoonx
from dxai.normalization import Normalization
from dxai.run_folder import (
    checkpoint_dir,
    distill_targets_path,
    load_classifier,
    predictor_path,
    report_dir,
    resume_path,
    save_weights,
)
from dxai.training.common import log_image_panel, make_trainer, single_cpu_process
from dxai.training.masks import STAGE, MaskModule

MASKS_REPORT = "masks.md"  # the masks stage's per-image table (report.md repeats it)
_EARLY: dict[str, object] = {}  # reference key -> the background process ``start_early`` started


def distill_targets(cfg: Config, classifier: nn.Module, dataset, run_dir: Path) -> dict[str, torch.Tensor]:
    """CartoonX masks of the first ``masks.distill_images`` training images, optimised once and
    cached in the stage's checkpoint folder."""
    path = distill_targets_path(run_dir)
    if path.is_file():
        return load_file(str(path))
    m = cfg.masks
    images = first_images(dataset, m.distill_images, Normalization.symmetric(cfg.data.img_channels))
    cartoonx = build_cartoonx(cfg, classifier, m.eval_num_samples)
    schedule = refine_schedule(cartoonx, protocol_settings(cfg)) if m.distill_schedule == "refine" else None
    result = cartoonx.optimize(images, steps=m.distill_steps, seed=m.eval_seed, schedule=schedule)
    targets = {"images": images, "target": result.target, "masks": result.flat_masks}
    save_weights(targets, path)
    return targets


def protocol_settings(cfg: Config) -> ProtocolSettings:
    m = cfg.masks
    return ProtocolSettings(reference_steps=m.eval_reference_steps, refine_steps=m.eval_refine_steps,
                            num_samples=m.eval_num_samples, bank_samples=m.eval_bank_samples,
                            reference_every=m.eval_reference_every, refine_every=m.eval_refine_every,
                            refine_curve_every=m.eval_refine_curve_every, seed=m.eval_seed)


def is_done(cfg: Config, run_dir: Path) -> bool:
    return predictor_path(run_dir).is_file() and "one_pass_loss_ratio" in read_metrics(run_dir).get(STAGE, {})


def run(cfg: Config, run_dir: Path) -> dict:
    """Train (or resume) the mask predictor, save it, evaluate it against CartoonX."""
    m = cfg.masks
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    data = DXAIDataModule(cfg.data, batch_size=m.batch_size, stage=STAGE)
    classifier = load_classifier(cfg, run_dir)
    normalization = Normalization.symmetric(cfg.data.img_channels)
    distill = distill_targets(cfg, classifier, data.train_set, run_dir) if m.distill else None
    module = MaskModule(cfg, classifier, first_images(data.val_set, m.num_panel_images, normalization), distill)
    trainer = make_trainer(cfg, run_dir, STAGE, max_steps=m.max_steps,
                           val_every_steps=min(m.image_every_steps, m.max_steps) or None)
    data.check_batch_size(trainer.world_size)  # before any training: a full batch on every process
    one_cpu_process = trainer.world_size == 1 and trainer.strategy.root_device.type == "cpu"
    reference = background_reference(cfg, classifier, data.val_set, run_dir) if one_cpu_process else None
    threads = torch.get_num_threads()
    if one_cpu_process and cfg.trainer.cpu_threads and (reference is None or not reference.is_alive()):
        torch.set_num_threads(2 * cfg.trainer.cpu_threads)  # alone on the machine: the background's share too
    try:
        trainer.fit(module, train_dataloaders=data.train_dataloader(), ckpt_path=resume_path(run_dir, STAGE))
        results = {}
        if trainer.is_global_zero:
            predictor = module.trained_predictor.eval().requires_grad_(False)
            save_weights(predictor, predictor_path(run_dir))
            results = evaluate(cfg, trainer, classifier, predictor, data.val_set, run_dir, reference)
    except BaseException:
        if reference is not None:
            reference.terminate()
        raise
    finally:
        torch.set_num_threads(threads)
    trainer.strategy.barrier("mask predictor saved")
    return {k: results[k] for k in ("one_pass_loss_ratio", "steps_to_reference_median", "steps_to_reference_p90",
                                    "control_steps_to_reference_median", "refined_loss_ratio_at_200")
            if k in results}


def eval_images(cfg: Config, val_set, device) -> torch.Tensor:
    return first_images(val_set, cfg.masks.eval_images, Normalization.symmetric(cfg.data.img_channels)).to(device)


def _reference_job(cfg: Config, classifier: nn.Module, val_set) -> tuple:
    """What the reference and control need (they need neither the predictor nor its training), and its cache key."""
    images = eval_images(cfg, val_set, "cpu")
    cartoonx = build_cartoonx(cfg, classifier, cfg.masks.eval_num_samples)
    settings = protocol_settings(cfg)
    return cartoonx, images, settings, reference_key(cartoonx, images, settings)


def _start_job(cfg: Config, run_dir: Path, cartoonx, images, settings):
    return start_reference(cartoonx, images, settings, checkpoint_dir(run_dir, STAGE), cfg.trainer.cpu_threads or 1)


def background_reference(cfg: Config, classifier: nn.Module, val_set, run_dir: Path):
    """The evaluation's reference and control computed into their cache by a second process (with
    ``masks.eval_reference_background``, unless cached): the one ``start_early`` started for the same
    key, else a new one. Returns the process or None."""
    if not cfg.masks.eval_reference_background:
        return None
    cartoonx, images, settings, key = _reference_job(cfg, classifier, val_set)
    return _EARLY.pop(key, None) or _start_job(cfg, run_dir, cartoonx, images, settings)


def early_processes() -> list:
    """The background processes ``start_early`` started and the stage has not taken over yet."""
    return list(_EARLY.values())


def start_early(cfg: Config, run_dir: Path) -> None:
    """Start ``background_reference``'s process as soon as the classifier exists, so that it runs
    beside the stages before this one (on a CPU the decomposition stage leaves a core idle with
    ``trainer.cpu_threads`` 1); the pipeline calls this before every stage it runs."""
    from dxai.stages import classifier as classifier_stage

    if (_EARLY or not cfg.masks.eval_reference_background or not single_cpu_process(cfg.trainer)
            or is_done(cfg, run_dir) or not classifier_stage.is_done(cfg, run_dir)):
        return
    data = DXAIDataModule(cfg.data, batch_size=cfg.masks.batch_size, stage=STAGE)
    cartoonx, images, settings, key = _reference_job(cfg, load_classifier(cfg, run_dir), data.val_set)
    process = _start_job(cfg, run_dir, cartoonx, images, settings)
    if process is not None:
        _EARLY[key] = process


def evaluate(cfg: Config, trainer: pl.Trainer, classifier: nn.Module, predictor: nn.Module, val_set,
             run_dir: Path, reference_process=None) -> dict:
    """The predictor against CartoonX on the first ``masks.eval_images`` validation images (rank 0);
    the reference comes from its cache in the stage's checkpoint folder when there (or from
    ``reference_process``, waited for)."""
    m = cfg.masks
    device = trainer.strategy.root_device
    images = eval_images(cfg, val_set, device)
    cartoonx = build_cartoonx(cfg, classifier.to(device), m.eval_num_samples, predictor.to(device))
    results = evaluate_mask_predictor(cartoonx, images, protocol_settings(cfg), report_dir(run_dir),
                                      checkpoint_dir(run_dir, STAGE), reference_process)
    atomic_write_text(report_dir(run_dir) / MASKS_REPORT, per_image_markdown(results))
    panel = results.pop("panel")
    log_image_panel(trainer, "masks/evaluation", panel[:m.num_panel_images].flatten(0, 1),
                    ["image", "one pass", f"ones, {m.eval_reference_steps}", f"refined, {m.eval_refine_steps}"],
                    caption="the predictor's one-pass cartoon, the reference (CartoonX from all-ones, the paper's "
                            "setting) and the refinement from the predictor's mask (steps after the comma)")
    results["train_steps"] = trainer.global_step
    results["distill"] = m.distill
    update_metrics(run_dir, STAGE, results)
    return results
