"""Time to quality of CartoonX started from the mask predictor: the masks stage's evaluation.

The protocol, on ``images`` validation images (the images of each optimisation batched):

- a fixed, seeded **bank** of ``bank_samples`` noise draws per image scores every mask; no
  optimisation ever draws from it, so curves differ by their masks only;
- the **reference** is the CartoonX paper's setting: all-ones, Adam at the constant paper ``lr``
  for ``reference_steps`` steps with the configured L, run with two optimisation seeds (one
  optimisation of 2B masks); its final loss per image (seed 0) is the level to reach, the other
  seed gives its spread. It depends on the classifier, the images and these settings only: it is
  cached (``reference_curves``, keyed by a hash of all three) and can run in a background
  process before the evaluation (``start_reference``);
- **refined**: dxai's refinement (``CartoonX.refine_schedule``) from the start that
  ``CartoonX.select_start`` picks per image (the predictor's mask, its blend with all-ones, or
  all-ones), as ``init="predictor"`` does for users, with the schedule's all-ones track where it
  has one (scored at every step as the masks it would return then: per image the better track on
  its own fixed draws, not on the bank);
- **control**: the same refinement from all-ones, without an all-ones track (``control_schedule``),
  which separates the start from the optimiser; it does not depend on the predictor either, so it
  is computed and cached with the reference;
- **one pass**: the predictor's mask alone.

For every method and image, the first step, among step 0, every ``refine_every`` steps and the
last, at which its loss on the bank is at or below the reference's final loss of that image; an
image never reaching it counts as the step limit in the median and 90th percentile
(``*_unreached`` says how many). An image is measured at those steps only until it has reached
the level; the mean curves are measured for all images every ``refine_curve_every`` steps and at
step 200. Times are wall seconds of the optimisation steps, measurements excluded (a batched
optimisation's time is shared equally by its methods); the refined method's include the
predictor's pass and the start selection.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save as safetensors_bytes  # noqa: E402

from dxai.background import start_process  # noqa: E402
from dxai.explain.cartoonx import STARTS, CartoonX  # noqa: E402
from dxai.explain.classifier_wrapper import evaluation_mode  # noqa: E402
from dxai.explain.rde import MaskOptimizer, RDELoss, RDEObjective, Schedule  # noqa: E402
from dxai.io import atomic_write_bytes  # noqa: E402
from dxai.progress import Progress  # noqa: E402
from dxai.timing import timed  # noqa: E402
from dxai.wavelets import Bands, ones_mask  # noqa: E402

STEPS_PLOT, SECONDS_PLOT = "masks_loss_vs_steps.png", "masks_loss_vs_seconds.png"
BANK_SEED_OFFSET = 1_000_003  # keeps the bank's draws apart from every optimisation's
SAMPLES_PER_CALL = 1024       # obfuscations per classifier call in the evaluation (speed, not results)
CACHE_VERSION = 2             # of the reference cache's contents: a change recomputes every cached reference
LOSS_AT = 200                 # the step of refined_loss_ratio_at_200


@dataclass(frozen=True)
class ProtocolSettings:
    reference_steps: int = 2000    # the CartoonX paper's steps from all-ones
    refine_steps: int = 300        # step limit of the refined and control runs
    num_samples: int = 4           # L of every optimisation
    bank_samples: int = 64         # fixed noise draws per image that score every mask
    reference_every: int = 100     # measuring interval of the reference curve
    refine_every: int = 5          # measuring interval of the steps to reference (each image until it reaches it)
    refine_curve_every: int = 25   # measuring interval of the refined and control mean curves (all images)
    seed: int = 0


@dataclass
class Curve:
    steps: list[int]
    loss: torch.Tensor             # (len(steps), B) per-image loss on the bank
    masks: Bands                   # after the last step
    seconds: float                 # optimisation time, measurements excluded
    reached: list[int | None] | None = None  # per image, the first watched step at or below its level
    from_ones_track: list[bool] | None = None  # per image, whether the final masks are the all-ones track's

    def mean(self) -> list[float]:
        return self.loss.mean(1).tolist()


class NoiseBank:
    """The RDE loss of any mask on the same noise draws: each call re-seeds the generators."""

    def __init__(self, cartoonx: CartoonX, images: torch.Tensor, representation, target: torch.Tensor,
                 num_samples: int, seed: int):
        self.objective = RDEObjective(cartoonx.classifier, images, representation, target, cartoonx.lam,
                                      num_samples, cartoonx.distortion)
        self.seeds = [BANK_SEED_OFFSET + seed + index for index in range(len(images))]
        self.device = images.device

    @torch.no_grad()
    def __call__(self, masks: Bands, rows: list[int] | None = None) -> RDELoss:
        """The loss of ``masks`` on the bank; ``rows``: the image of each mask (default: mask i is
        image i), so that any subset or repetition of the images is scored on the same draws."""
        objective = self.objective if rows is None else self.objective.select(rows)
        rows = range(len(self.seeds)) if rows is None else rows
        generators = [torch.Generator(device=self.device).manual_seed(self.seeds[row]) for row in rows]
        return objective.evaluate([band.detach() for band in masks], generators, SAMPLES_PER_CALL)


@dataclass
class Start:
    """One method of a batched optimisation: its step-0 masks (B images), the seed of its first
    image (image i optimises with ``seed + i``), the measuring interval of its mean curve and,
    optionally, the per-image level whose first reach is watched every ``watch_every`` steps."""

    initial: Bands
    seed: int
    every: int
    level: torch.Tensor | None = None


def optimisation_curves(cartoonx: CartoonX, images: torch.Tensor, representation, target: torch.Tensor,
                        starts: list[Start], schedule: Schedule, steps: int, bank: NoiseBank, watch_every: int = 0,
                        at: tuple[int, ...] = (), description: str = "") -> list[Curve]:
    """CartoonX's Adam loop under ``schedule`` from every start at once: one optimisation of
    len(starts) * B masks, each image with its own seed, noise and Adam state, so each method's masks
    are those of its own run. Each mean curve is scored on the bank at step 0, every ``every``
    steps, at the steps ``at`` and at the end; an image with a level is also scored at step 0, every
    ``watch_every`` steps and at the end until its loss is at or below its level (``Curve.reached``)."""
    batch = len(images)
    objective = RDEObjective(cartoonx.classifier, images, representation, target, cartoonx.lam,
                             schedule.num_samples or cartoonx.num_samples, cartoonx.distortion)
    if len(starts) > 1:
        objective = objective.select(list(range(batch)) * len(starts))
    seeds = [start.seed + index for start in starts for index in range(batch)]
    initial = [torch.cat(bands) for bands in zip(*(start.initial for start in starts), strict=True)]
    optimizer = MaskOptimizer(objective, initial, schedule.lr, seeds, SAMPLES_PER_CALL, schedule, steps)
    points: list[list[int]] = [[] for _ in starts]
    losses: list[list[torch.Tensor]] = [[] for _ in starts]
    reached = [None if start.level is None else [None] * batch for start in starts]

    def measure(step: int) -> None:
        last = step in (0, steps)
        curves = [j for j, start in enumerate(starts) if last or step % start.every == 0 or step in at]
        watched = last or (watch_every > 0 and step % watch_every == 0)
        rows = {j * batch + i for j in curves for i in range(batch)}
        if watched:
            rows |= {j * batch + i for j, done in enumerate(reached) if done is not None
                     for i in range(batch) if done[i] is None}
        if not rows:
            return
        rows = sorted(rows)
        masks = optimizer.chosen(rows)[0]  # what the optimisation would return if it stopped here
        loss = bank(masks, [row % batch for row in rows]).loss.cpu()
        by_row = dict(zip(rows, loss, strict=True))
        for j in curves:
            points[j].append(step)
            losses[j].append(torch.stack([by_row[j * batch + i] for i in range(batch)]))
        for j, done in enumerate(reached):
            if watched and done is not None:
                for i in range(batch):
                    if done[i] is None and by_row[j * batch + i] <= starts[j].level[i]:
                        done[i] = step

    measure(0)
    seconds = 0.0
    with Progress(f"masks: {description}", steps) as progress:
        for step in range(1, steps + 1):
            seconds += timed(optimizer.step, images.device)[1]
            measure(step)
            progress.update(loss=f"{float(losses[0][-1].mean()):.4f}")
    (masks, from_ones_track), choice_seconds = timed(optimizer.chosen, images.device)
    seconds += choice_seconds
    return [Curve(points[j], torch.stack(losses[j]), [band[j * batch:(j + 1) * batch] for band in masks],
                  seconds / len(starts), reached[j], from_ones_track[j * batch:(j + 1) * batch])
            for j in range(len(starts))]


def optimisation_curve(cartoonx: CartoonX, images: torch.Tensor, representation, target: torch.Tensor,
                       initial: Bands, schedule: Schedule, steps: int, every: int, bank: NoiseBank, seed: int,
                       description: str) -> Curve:
    """One method's ``optimisation_curves``: scored on the bank at step 0, every ``every`` steps and at the end."""
    return optimisation_curves(cartoonx, images, representation, target, [Start(initial, seed, every)], schedule,
                               steps, bank, description=description)[0]


def refine_schedule(cartoonx: CartoonX, settings: ProtocolSettings) -> Schedule:
    """The refined run's schedule: CartoonX's refinement schedule (else the paper's constant lr), with
    L = ``settings.num_samples`` unless the schedule sets its own."""
    refine = cartoonx.refine_schedule or Schedule(cartoonx.lr)
    return replace(refine, num_samples=refine.num_samples or settings.num_samples)


def control_schedule(cartoonx: CartoonX, settings: ProtocolSettings) -> Schedule:
    """The control's: the refined run's without its all-ones track, which from all-ones would be a
    second all-ones run at half the draws each; so the control is the best single all-ones refinement."""
    return replace(refine_schedule(cartoonx, settings), ones_track_from=None)


def _reference_protocol(cartoonx: CartoonX, representation, settings: ProtocolSettings, device) -> dict:
    s = settings
    control = control_schedule(cartoonx, settings)
    return {"version": CACHE_VERSION, "reference_steps": s.reference_steps, "num_samples": s.num_samples,
            "bank_samples": s.bank_samples, "reference_every": s.reference_every, "seed": s.seed,
            "refine_steps": s.refine_steps, "refine_every": s.refine_every, "refine_curve_every": s.refine_curve_every,
            "control_schedule": [control.lr, control.final_lr_fraction, control.num_samples, control.l1_at_zero],
            "loss_at": LOSS_AT, "bank_seed_offset": BANK_SEED_OFFSET, "lam": cartoonx.lam, "lr": cartoonx.lr,
            "distortion": cartoonx.distortion, "levels": representation.levels, "wavelet": representation.wavelet,
            "mode": getattr(representation, "mode", cartoonx.mode), "device": torch.device(device).type}


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def reference_key(cartoonx: CartoonX, images: torch.Tensor, settings: ProtocolSettings) -> str:
    """What the reference curves depend on, hashed: the classifier's state dict (names, dtypes,
    shapes, bytes), the images and the protocol's settings of the reference, the control and the bank."""
    representation = cartoonx.representation(tuple(images.shape[-2:]))
    digest = hashlib.sha256()
    for name, tensor in sorted(cartoonx.classifier.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(_tensor_bytes(tensor))
    digest.update(f"images|{images.dtype}|{tuple(images.shape)}|".encode())
    digest.update(_tensor_bytes(images))
    protocol = _reference_protocol(cartoonx, representation, settings, images.device)
    digest.update(json.dumps(protocol, sort_keys=True).encode())
    return digest.hexdigest()


def reference_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"reference_{key[:16]}.safetensors"


CACHED_CURVES = ("reference", "other_seed", "control")


def save_reference(path: Path, key: str, reference: Curve, other_seed: Curve, control: Curve) -> None:
    """The reference curves, the seed-0 final masks and the control curve, written atomically."""
    curves = dict(zip(CACHED_CURVES, (reference, other_seed, control), strict=True))
    tensors = {**{f"{name}.loss": curve.loss.contiguous() for name, curve in curves.items()},
               **{f"reference.mask.{i}": band.detach().cpu().contiguous() for i, band in enumerate(reference.masks)}}
    metadata = {"key": key, "control.reached": json.dumps(control.reached)}
    for name, curve in curves.items():
        metadata.update({f"{name}.steps": json.dumps(curve.steps), f"{name}.seconds": repr(curve.seconds)})
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata))


def load_reference(path: Path, key: str, device) -> tuple[Curve, Curve, Curve] | None:
    """The cached reference and control curves of ``key``, or None (no file, another key, an unreadable file)."""
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("key") != key:
                return None
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        bands = sorted((int(name.rsplit(".", 1)[1]), tensor) for name, tensor in tensors.items()
                       if name.startswith("reference.mask."))
        masks = [tensor.to(device) for _, tensor in bands]
        curves = [Curve(json.loads(metadata[f"{name}.steps"]), tensors[f"{name}.loss"], masks if name == "reference"
                        else [], float(metadata[f"{name}.seconds"])) for name in CACHED_CURVES]
        curves[2].reached = json.loads(metadata["control.reached"])
    except (OSError, KeyError, ValueError, RuntimeError, json.JSONDecodeError):
        return None
    return curves[0], curves[1], curves[2]


def compute_reference(cartoonx: CartoonX, images: torch.Tensor,
                      settings: ProtocolSettings) -> tuple[Curve, Curve, Curve]:
    """The reference from all-ones at the paper's constant lr, seeds ``seed`` and ``seed + B``, as one
    optimisation of 2B masks (seed 0 scored every ``reference_every`` steps, seed 1 at the end); then
    the control: the refinement schedule from all-ones, watched for the reference's final loss."""
    s = settings
    representation = cartoonx.representation(tuple(images.shape[-2:])).to(images.device, images.dtype)
    ones = ones_mask(representation.mask_shapes(tuple(images.shape[-2:])), len(images), images.device, images.dtype)
    with evaluation_mode(cartoonx.classifier):
        target = cartoonx.classifier(images).argmax(1)
        bank = NoiseBank(cartoonx, images, representation, target, s.bank_samples, s.seed)
        reference, other_seed = optimisation_curves(
            cartoonx, images, representation, target,
            [Start(ones, s.seed, s.reference_every), Start(ones, s.seed + len(images), s.reference_steps)],
            Schedule(cartoonx.lr, num_samples=s.num_samples), s.reference_steps, bank, description="reference")
        control = optimisation_curves(
            cartoonx, images, representation, target, [Start(ones, s.seed, s.refine_curve_every, reference.loss[-1])],
            control_schedule(cartoonx, s), s.refine_steps, bank, s.refine_every, (LOSS_AT,), "control")[0]
    return reference, other_seed, control


def _reference_worker(cartoonx: CartoonX, images: torch.Tensor, settings: ProtocolSettings, path: str,
                      key: str) -> None:
    save_reference(Path(path), key, *compute_reference(cartoonx, images, settings))


def start_reference(cartoonx: CartoonX, images: torch.Tensor, settings: ProtocolSettings, cache_dir: Path,
                    threads: int | None = 1):
    """Compute the reference into the cache in a background process (spawned), unless it is cached;
    returns the process (join it before ``reference_curves``) or None."""
    key = reference_key(cartoonx, images, settings)
    path = reference_path(cache_dir, key)
    if load_reference(path, key, images.device) is not None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return start_process(_reference_worker, (cartoonx, images, settings, str(path), key), "dxai-mask-reference",
                         threads, daemon=True)


def reference_curves(cartoonx: CartoonX, images: torch.Tensor, settings: ProtocolSettings,
                     cache_dir: Path | None) -> tuple[Curve, Curve, Curve, bool]:
    """The reference curves (seeds 0 and 1) and the control from the cache of ``cache_dir`` when its
    key matches, else computed (and cached); the flag says whether they came from the cache."""
    if cache_dir is None:
        return *compute_reference(cartoonx, images, settings), False
    key = reference_key(cartoonx, images, settings)
    path = reference_path(cache_dir, key)
    cached = load_reference(path, key, images.device)
    if cached is not None:
        return *cached, True
    curves = compute_reference(cartoonx, images, settings)
    save_reference(path, key, *curves)
    return *curves, False


def steps_to_reach(steps: list[int], loss: torch.Tensor, level: torch.Tensor) -> list[int | None]:
    """Per image, the first measured step whose loss is at or below ``level`` of that image (None: never)."""
    reached = loss <= level.view(1, -1)
    return [steps[int(torch.nonzero(column)[0])] if bool(column.any()) else None for column in reached.T]


def _summary(reached: list[int | None], limit: int) -> dict:
    counted = np.array([limit if step is None else step for step in reached], dtype=float)
    return {"median": float(np.median(counted)), "p90": float(np.percentile(counted, 90)),
            "within_200": float(np.mean(counted <= 200)), "unreached": sum(step is None for step in reached)}


def _loss_at(curve: Curve, step: int) -> float:
    """Mean loss at the last measured step at or before ``step``."""
    index = max(i for i, point in enumerate(curve.steps) if point <= step)
    return float(curve.loss[index].mean())


def _plot(curves: dict[str, tuple[Curve, float]], one_pass: tuple[float, float], level: float, path: Path,
          seconds_axis: bool, title: str) -> None:
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    styles = {"reference": ("tab:blue", "-"), "reference, seed 1": ("tab:blue", ":"),
              "refined from the predictor": ("tab:orange", "-"), "control: refined from all-ones": ("tab:green", "-")}
    for name, (curve, offset) in curves.items():
        per_step = curve.seconds / max(curve.steps[-1], 1)
        x = [offset + step * per_step for step in curve.steps] if seconds_axis else curve.steps
        color, style = styles[name]
        axes.plot(x, curve.mean(), label=name, color=color, linestyle=style)
    axes.axhline(level, color="black", linestyle="--", linewidth=1, label=f"reference final loss {level:.4f}")
    axes.scatter([one_pass[1] if seconds_axis else 0], [one_pass[0]], color="tab:red", zorder=3,
                 label=f"predictor alone (one pass): {one_pass[0]:.4f}")
    axes.set_xscale("symlog" if not seconds_axis else "log")
    axes.set_yscale("log")
    axes.set_xlabel("wall seconds (all images)" if seconds_axis else "CartoonX optimisation step")
    axes.set_ylabel("mean RDE loss (fixed noise bank)")
    axes.set_title(title, fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def evaluate_mask_predictor(cartoonx: CartoonX, images: torch.Tensor, settings: ProtocolSettings,
                            report_dir: Path, cache_dir: Path | None = None, reference_process=None) -> dict:
    """The ``masks`` section of metrics.json for ``images`` (B, C, H, W) in [0, 1]; ``cartoonx``
    carries the mask predictor, the paper's ``lr``, the refinement schedule and the start selection.
    The reference curves come from ``cache_dir``'s cache when there (``reference_process``: a
    ``start_reference`` process computing them, waited for). Also returns ``panel``:
    (B, 4, C, H, W) image | one-pass cartoon | reference cartoon | refined cartoon."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    representation = cartoonx.representation(tuple(images.shape[-2:])).to(images.device, images.dtype)
    paper = Schedule(cartoonx.lr, num_samples=settings.num_samples)
    refine = refine_schedule(cartoonx, settings)
    s = settings
    with evaluation_mode(cartoonx.classifier):
        target = cartoonx.classifier(images).argmax(1)
        bank = NoiseBank(cartoonx, images, representation, target, s.bank_samples, s.seed)
        cartoonx.predicted_mask(images, target)  # warm-up
        predicted_mask, predictor_seconds = timed(lambda: cartoonx.predicted_mask(images, target), images.device)
        one_pass = bank(predicted_mask).loss.cpu()
        (start_masks, starts), select_seconds = timed(
            lambda: cartoonx.select_start(images, target, predicted_mask, representation), images.device)
        timings["one_pass_and_start_selection"] = time.perf_counter() - clock
        clock = time.perf_counter()
        waited = reference_process is not None
        if waited:
            reference_process.join()
        reference, other_seed, control, cached = reference_curves(cartoonx, images, settings, cache_dir)
        source = ("background process" if waited else "cache") if cached else "computed here"
        timings["reference (waited for)" if waited else "reference"] = time.perf_counter() - clock
        clock = time.perf_counter()
        level = reference.loss[-1]
        refined = optimisation_curves(
            cartoonx, images, representation, target, [Start(start_masks, s.seed, s.refine_curve_every, level)],
            refine, s.refine_steps, bank, s.refine_every, (LOSS_AT,), "refined")[0]
        timings["refined"] = time.perf_counter() - clock
        timings["refined, optimisation only"] = refined.seconds
    runs = {"reference": reference, "reference, seed 1": other_seed, "refined from the predictor": refined,
            "control: refined from all-ones": control}
    reference_loss = float(level.mean())
    one_pass_ratios = one_pass / level.cpu()
    refined_steps = _summary(refined.reached, s.refine_steps)
    control_steps = _summary(control.reached, s.refine_steps)
    per_image = [{"image": i, "one_pass_loss": float(one_pass[i]), "reference_loss": float(level[i]),
                  "start": starts[i], "returned_from_ones_track": refined.from_ones_track[i],
                  "steps_to_reference": refined.reached[i],
                  "control_steps_to_reference": control.reached[i], "refined_final_loss": float(refined.loss[-1, i]),
                  "control_final_loss": float(control.loss[-1, i])} for i in range(len(images))]
    per_step = {name: curve.seconds / max(curve.steps[-1], 1) / len(images) for name, curve in runs.items()}
    folder = Path(report_dir)
    title = (f"CartoonX on {len(images)} validation images, L = {s.num_samples}, scored on {s.bank_samples} "
             f"fixed noise draws per image")
    start_seconds = predictor_seconds + select_seconds
    offsets = {name: (start_seconds if name.startswith("refined") else 0.0) for name in runs}
    plot_runs = {name: (curve, offsets[name]) for name, curve in runs.items()}
    _plot(plot_runs, (float(one_pass.mean()), predictor_seconds), reference_loss, folder / STEPS_PLOT, False, title)
    _plot(plot_runs, (float(one_pass.mean()), predictor_seconds), reference_loss, folder / SECONDS_PLOT, True, title)
    cartoons = [cartoonx.visualize(images, masks, representation).expand_as(images)
                for masks in (predicted_mask, reference.masks, refined.masks)]
    return {
        "settings": {**asdict(settings), "lam": cartoonx.lam, "reference_lr": paper.lr, "refine_lr": refine.lr,
                     "refine_final_lr_fraction": refine.final_lr_fraction,
                     "refine_l1_at_zero": refine.l1_at_zero, "refine_ones_track_from": refine.ones_track_from,
                     "distortion": cartoonx.distortion,
                     "levels": representation.levels, "wavelet": representation.wavelet, "device": str(images.device)},
        "eval_images": len(images),
        "reference_final_loss": reference_loss,
        "reference_seed_spread": abs(float(other_seed.loss[-1].mean()) - reference_loss),
        "reference_seed_spread_per_image": float((other_seed.loss[-1] - level).abs().mean()),
        "steps_to_reference_median": refined_steps["median"],
        "steps_to_reference_p90": refined_steps["p90"],
        "fraction_within_200": refined_steps["within_200"],
        "steps_to_reference_unreached": refined_steps["unreached"],
        "control_steps_to_reference_median": control_steps["median"],
        "control_steps_to_reference_p90": control_steps["p90"],
        "control_fraction_within_200": control_steps["within_200"],
        "control_steps_to_reference_unreached": control_steps["unreached"],
        "one_pass_loss": float(one_pass.mean()),
        "one_pass_loss_ratio": float(one_pass.mean()) / reference_loss,
        # The mean's ratio is carried by the images with the largest losses; these say what a typical image gets.
        "one_pass_ratio_per_image_median": float(one_pass_ratios.quantile(0.5)),
        "one_pass_ratio_per_image_p90": float(one_pass_ratios.quantile(0.9)),
        "refined_loss_ratio_at_200": _loss_at(refined, 200) / reference_loss,
        "control_loss_ratio_at_200": _loss_at(control, 200) / reference_loss,
        "start_from_predictor_fraction": starts.count("predictor") / len(images),
        "returned_from_ones_track_fraction": sum(refined.from_ones_track) / len(images),
        "start_counts": {name: starts.count(name) for name in STARTS},
        "start_l1_weight": cartoonx.start_l1_weight,
        "start_samples": cartoonx.start_samples,
        "one_pass_ms_per_image": 1000 * predictor_seconds / len(images),
        "start_selection_ms_per_image": 1000 * select_seconds / len(images),
        "reference_s_per_image": reference.seconds / len(images),
        "reference_source": source,
        "evaluation_seconds": timings,
        "seconds_per_step_per_image": per_step,
        "curves": {name: {"steps": curve.steps, "loss": curve.mean()} for name, curve in runs.items()},
        "per_image": per_image,
        "plots": [STEPS_PLOT, SECONDS_PLOT],
        "panel": torch.stack([images, *cartoons], 1).cpu(),
    }


def per_image_markdown(section: dict) -> str:
    """The per-image table of a ``masks`` section (metrics.json) as markdown: one-pass loss, the
    reference's final loss, the start the refinement used, steps to the reference for it and for
    the control (all-ones), with a summary line above."""
    rows = section.get("per_image") or []
    if not rows:
        return "No per-image results (the masks stage's evaluation predates them).\n"
    limit = section["settings"]["refine_steps"]

    def steps(value) -> str:
        return f"> {limit}" if value is None else str(value)

    def start(row) -> str:
        return f"{row['start']}, returned: all-ones track" if row.get("returned_from_ones_track") else row["start"]

    counts = ", ".join(f"{name} {count}" for name, count in section["start_counts"].items())
    faster = sum(1 for row in rows if (row["steps_to_reference"] or limit + 1)
                 < (row["control_steps_to_reference"] or limit + 1))
    slower = sum(1 for row in rows if (row["steps_to_reference"] or limit + 1)
                 > (row["control_steps_to_reference"] or limit + 1))
    lines = [f"Per image ({len(rows)} validation images; start used: {counts}; the refinement reaches the "
             f"reference sooner than the control on {faster} images, later on {slower}; "
             f"'> {limit}': not within {limit} steps).", "",
             "| image | one-pass loss | reference loss | one pass / reference | start | steps to reference "
             "| control steps |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['image']} | {row['one_pass_loss']:.4f} | {row['reference_loss']:.4f} | "
                     f"{row['one_pass_loss'] / row['reference_loss']:.2f} | {start(row)} | "
                     f"{steps(row['steps_to_reference'])} | {steps(row['control_steps_to_reference'])} |")
    return "\n".join(lines) + "\n"
