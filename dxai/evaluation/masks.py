"""Time to quality of CartoonX started from the mask predictor: the masks stage's evaluation.

The protocol, on ``images`` validation images (one CartoonX call per method, all images batched):

- a fixed, seeded **bank** of ``bank_samples`` noise draws per image scores every mask; no
  optimisation ever draws from it, so curves differ by their masks only;
- the **reference** is the CartoonX paper's setting: all-ones, Adam at the constant paper ``lr``
  for ``reference_steps`` steps with the configured L, run with two optimisation seeds; its
  final loss per image (seed 0) is the level to reach, the other seed gives its spread;
- **refined**: dxai's refinement (``CartoonX.refine_schedule``) from the predictor's mask;
- **control**: the same refinement from all-ones, which separates the start from the optimiser;
- **one pass**: the predictor's mask alone.

For every method and image, the first measured step at which its loss is at or below the
reference's final loss of that image; an image never reaching it counts as the step limit in
the median and 90th percentile (``*_unreached`` says how many). Times are wall seconds of the
optimisation steps, measurements excluded; the refined method's include the predictor's pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from dxai.explain.cartoonx import CartoonX  # noqa: E402
from dxai.explain.classifier_wrapper import evaluation_mode  # noqa: E402
from dxai.explain.rde import MaskOptimizer, RDELoss, RDEObjective, Schedule  # noqa: E402
from dxai.timing import timed  # noqa: E402
from dxai.wavelets import Bands, ones_mask  # noqa: E402

STEPS_PLOT, SECONDS_PLOT = "masks_loss_vs_steps.png", "masks_loss_vs_seconds.png"
BANK_SEED_OFFSET = 1_000_003  # keeps the bank's draws apart from every optimisation's
SAMPLES_PER_CALL = 1024       # obfuscations per classifier call in the evaluation (speed, not results)


@dataclass(frozen=True)
class ProtocolSettings:
    reference_steps: int = 2000    # the CartoonX paper's steps from all-ones
    refine_steps: int = 300        # step limit of the refined and control runs
    num_samples: int = 4           # L of every optimisation
    bank_samples: int = 64         # fixed noise draws per image that score every mask
    reference_every: int = 100     # measuring interval of the reference curve
    refine_every: int = 5          # measuring interval of the refined and control curves
    seed: int = 0


@dataclass
class Curve:
    steps: list[int]
    loss: torch.Tensor             # (len(steps), B) per-image loss on the bank
    masks: Bands                   # after the last step
    seconds: float                 # optimisation time, measurements excluded

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
    def __call__(self, masks: Bands) -> RDELoss:
        generators = [torch.Generator(device=self.device).manual_seed(seed) for seed in self.seeds]
        return self.objective.evaluate([band.detach() for band in masks], generators, SAMPLES_PER_CALL)


def optimisation_curve(cartoonx: CartoonX, images: torch.Tensor, representation, target: torch.Tensor,
                       initial: Bands, schedule: Schedule, steps: int, every: int, bank: NoiseBank, seed: int,
                       description: str) -> Curve:
    """CartoonX's Adam loop from ``initial`` under ``schedule``, scored on the bank at step 0, every
    ``every`` steps and at the end (a progress bar named ``description`` shows on a terminal)."""
    objective = RDEObjective(cartoonx.classifier, images, representation, target, cartoonx.lam,
                             schedule.num_samples or cartoonx.num_samples, cartoonx.distortion)
    seeds = [seed + index for index in range(len(images))]
    optimizer = MaskOptimizer(objective, initial, schedule.lr, seeds, SAMPLES_PER_CALL, schedule, steps)
    points, losses, seconds = [0], [bank(optimizer.masks).loss.cpu()], 0.0
    bar = tqdm(range(1, steps + 1), desc=description, unit="step", disable=None, leave=False)
    for step in bar:
        seconds += timed(optimizer.step, images.device)[1]
        if step % every == 0 or step == steps:
            points.append(step)
            losses.append(bank(optimizer.masks).loss.cpu())
            bar.set_postfix(loss=f"{float(losses[-1].mean()):.4f}")
    bar.close()
    return Curve(points, torch.stack(losses), [band.detach() for band in optimizer.masks], seconds)


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
                            report_dir: Path) -> dict:
    """The ``masks`` section of metrics.json for ``images`` (B, C, H, W) in [0, 1]; ``cartoonx``
    carries the mask predictor, the paper's ``lr`` and the refinement schedule. Also returns
    ``panel``: (B, 4, C, H, W) image | one-pass cartoon | reference cartoon | refined cartoon."""
    representation = cartoonx.representation(tuple(images.shape[-2:])).to(images.device, images.dtype)
    shapes = representation.mask_shapes(tuple(images.shape[-2:]))
    paper = Schedule(cartoonx.lr, num_samples=settings.num_samples)
    refine = cartoonx.refine_schedule or paper
    refine = Schedule(refine.lr, refine.final_lr_fraction, refine.num_samples or settings.num_samples)
    ones = ones_mask(shapes, len(images), images.device, images.dtype)
    s = settings
    with evaluation_mode(cartoonx.classifier):
        target = cartoonx.classifier(images).argmax(1)
        bank = NoiseBank(cartoonx, images, representation, target, s.bank_samples, s.seed)
        cartoonx.predicted_mask(images, target)  # warm-up
        predicted_mask, predictor_seconds = timed(lambda: cartoonx.predicted_mask(images, target), images.device)
        one_pass = bank(predicted_mask).loss.cpu()
        runs = {
            "reference": optimisation_curve(cartoonx, images, representation, target, ones, paper,
                                            s.reference_steps, s.reference_every, bank, s.seed, "reference"),
            "reference, seed 1": optimisation_curve(cartoonx, images, representation, target, ones, paper,
                                                    s.reference_steps, s.reference_steps, bank, s.seed + len(images),
                                                    "reference, seed 1"),
            "refined from the predictor": optimisation_curve(cartoonx, images, representation, target,
                                                             predicted_mask, refine, s.refine_steps, s.refine_every,
                                                             bank, s.seed, "refined"),
            "control: refined from all-ones": optimisation_curve(cartoonx, images, representation, target, ones,
                                                                 refine, s.refine_steps, s.refine_every, bank,
                                                                 s.seed, "control"),
        }
    reference, other_seed = runs["reference"], runs["reference, seed 1"]
    refined, control = runs["refined from the predictor"], runs["control: refined from all-ones"]
    level = reference.loss[-1]
    reference_loss = float(level.mean())
    refined_steps = _summary(steps_to_reach(refined.steps, refined.loss, level), s.refine_steps)
    control_steps = _summary(steps_to_reach(control.steps, control.loss, level), s.refine_steps)
    per_step = {name: curve.seconds / max(curve.steps[-1], 1) / len(images) for name, curve in runs.items()}
    folder = Path(report_dir)
    title = (f"CartoonX on {len(images)} validation images, L = {s.num_samples}, scored on {s.bank_samples} "
             f"fixed noise draws per image")
    offsets = {name: (predictor_seconds if name.startswith("refined") else 0.0) for name in runs}
    plot_runs = {name: (curve, offsets[name]) for name, curve in runs.items()}
    _plot(plot_runs, (float(one_pass.mean()), predictor_seconds), reference_loss, folder / STEPS_PLOT, False, title)
    _plot(plot_runs, (float(one_pass.mean()), predictor_seconds), reference_loss, folder / SECONDS_PLOT, True, title)
    cartoons = [cartoonx.visualize(images, masks, representation).expand_as(images)
                for masks in (predicted_mask, reference.masks, refined.masks)]
    return {
        "settings": {**asdict(settings), "lam": cartoonx.lam, "reference_lr": paper.lr, "refine_lr": refine.lr,
                     "refine_final_lr_fraction": refine.final_lr_fraction, "distortion": cartoonx.distortion,
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
        "refined_loss_ratio_at_200": _loss_at(refined, 200) / reference_loss,
        "control_loss_ratio_at_200": _loss_at(control, 200) / reference_loss,
        "one_pass_ms_per_image": 1000 * predictor_seconds / len(images),
        "reference_s_per_image": reference.seconds / len(images),
        "seconds_per_step_per_image": per_step,
        "curves": {name: {"steps": curve.steps, "loss": curve.mean()} for name, curve in runs.items()},
        "plots": [STEPS_PLOT, SECONDS_PLOT],
        "panel": torch.stack([images, *cartoons], 1).cpu(),
    }
