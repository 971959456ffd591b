"""How much of CartoonX's optimisation the mask predictor saves: the masks stage's evaluation.

On a batch of validation images, CartoonX runs from the all-ones mask for ``steps`` steps and
from the predictor's mask for ``predictor_steps`` steps, both in one batched call with the
same optimisation settings. Every measured mask (the predictor's own, and the optimised
ones at regular steps) is scored on one fixed set of noise draws, so that the curves differ
by their masks only, never by their noise. Reported:

- ``steps_to_optimum``: the fewest measured steps after which the predictor-initialised mean
  loss is at or below the all-ones mean loss at its last step (None: not within
  ``predictor_steps``);
- ``one_pass_loss_ratio``: the predictor's own mask's loss / the all-ones final loss;
- ``one_pass_ms_per_image`` (classifier + predictor forward) and ``cartoonx_s_per_image``
  (the all-ones optimisation, not counting the fixed-noise measurements);
- both curves, and a plot of them (``masks_loss_curves.png``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from dxai.explain.cartoonx import CartoonX  # noqa: E402
from dxai.explain.classifier_wrapper import evaluation_mode  # noqa: E402
from dxai.explain.rde import MaskOptimizer, RDELoss, RDEObjective  # noqa: E402
from dxai.wavelets import Bands, ones_mask  # noqa: E402

PLOT_NAME = "masks_loss_curves.png"
MEASURE_SEED_OFFSET = 1_000_003  # keeps the measuring noise apart from the optimisation's draws
TIMING_REPEATS = 5


@dataclass(frozen=True)
class CurveSettings:
    steps: int = 2000              # CartoonX steps from all-ones
    predictor_steps: int = 300     # CartoonX steps from the predicted mask
    num_samples: int = 4           # L of the optimisation
    loss_samples: int = 16         # size of the fixed noise set every mask is measured on
    every: int = 20                # measuring interval of the all-ones curve
    predictor_every: int = 10      # measuring interval of the predictor-initialised curve
    seed: int = 0


@dataclass
class Curve:
    steps: list[int]
    loss: list[float]              # mean over images, on the fixed noise set
    masks: Bands                   # the masks after the last step
    seconds: float                 # optimisation time, measurements excluded


class FixedNoiseLoss:
    """The RDE loss of any mask on the same noise draws: each call re-seeds the generators."""

    def __init__(self, cartoonx: CartoonX, images: torch.Tensor, representation, target: torch.Tensor,
                 num_samples: int, seed: int):
        self.objective = RDEObjective(cartoonx.classifier, images, representation, target, cartoonx.lam,
                                      num_samples, cartoonx.distortion)
        self.seeds = [MEASURE_SEED_OFFSET + seed + index for index in range(len(images))]
        self.device = images.device

    @torch.no_grad()
    def __call__(self, masks: Bands) -> RDELoss:
        generators = [torch.Generator(device=self.device).manual_seed(seed) for seed in self.seeds]
        return self.objective.loss([band.detach() for band in masks], generators)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def optimisation_curve(cartoonx: CartoonX, images: torch.Tensor, representation, target: torch.Tensor,
                       initial: Bands, steps: int, every: int, measure: FixedNoiseLoss, seed: int,
                       description: str = "CartoonX") -> Curve:
    """CartoonX's Adam loop (``RDE.optimize``'s, with the same objective and optimiser) from
    ``initial``, measuring the mean fixed-noise loss at step 0, every ``every`` steps and at the end.
    A progress bar named ``description`` shows on a terminal (tqdm's ``disable=None``)."""
    objective = RDEObjective(cartoonx.classifier, images, representation, target, cartoonx.lam,
                             cartoonx.num_samples, cartoonx.distortion)
    seeds = [seed + index for index in range(len(images))]
    optimizer = MaskOptimizer(objective, initial, cartoonx.lr, seeds, cartoonx.samples_per_call)
    points, losses, seconds = [0], [float(measure(optimizer.masks).loss.mean())], 0.0
    bar = tqdm(range(1, steps + 1), desc=description, unit="step", disable=None, leave=False)
    for step in bar:
        _synchronize(images.device)
        start = time.perf_counter()
        optimizer.step()
        _synchronize(images.device)
        seconds += time.perf_counter() - start
        if step % every == 0 or step == steps:
            points.append(step)
            losses.append(float(measure(optimizer.masks).loss.mean()))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    return Curve(points, losses, [band.detach() for band in optimizer.masks], seconds)


def steps_to_reach(curve: Curve, level: float) -> int | None:
    """The first measured step at which the curve is at or below ``level``."""
    return next((step for step, loss in zip(curve.steps, curve.loss) if loss <= level), None)


def one_pass_ms_per_image(cartoonx: CartoonX, images: torch.Tensor) -> float:
    """Median wall time of the predictor's mask (classifier forward for the class + predictor forward)."""
    cartoonx.predicted_mask(images)
    times = []
    for _ in range(TIMING_REPEATS):
        _synchronize(images.device)
        start = time.perf_counter()
        cartoonx.predicted_mask(images)
        _synchronize(images.device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / len(images)


def plot_curves(ones: Curve, predicted: Curve, one_pass: float, reached: int | None, path: Path,
                settings: CurveSettings) -> None:
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    axes.plot(ones.steps, ones.loss, label="CartoonX from all-ones", color="tab:blue")
    axes.plot(predicted.steps, predicted.loss, label="CartoonX from the predictor's mask", color="tab:orange")
    axes.axhline(ones.loss[-1], color="tab:blue", linestyle="--", linewidth=1,
                 label=f"all-ones at step {ones.steps[-1]}: {ones.loss[-1]:.3f}")
    axes.scatter([0], [one_pass], color="tab:red", zorder=3, label=f"predictor alone (one pass): {one_pass:.3f}")
    if reached is not None:
        axes.axvline(reached, color="tab:orange", linestyle=":", linewidth=1,
                     label=f"predictor start reaches it at step {reached}")
    axes.set_yscale("log")
    axes.set_xlabel("CartoonX optimisation step")
    axes.set_ylabel("mean RDE loss (fixed noise set)")
    axes.set_title(f"CartoonX loss, {len(ones.masks[0])} images, L = {settings.num_samples} "
                   f"(measured with {settings.loss_samples} fixed noise samples)", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def evaluate_mask_predictor(cartoonx: CartoonX, images: torch.Tensor, settings: CurveSettings,
                            report_dir: Path) -> dict:
    """The metrics of the masks stage for ``images`` (B, C, H, W) in [0, 1]; ``cartoonx`` carries
    the mask predictor and the optimisation settings (its ``num_samples`` should be
    ``settings.num_samples``). Also returns ``panel``: (B, 4, C, H, W) image | one-pass cartoon |
    all-ones cartoon | predictor-initialised cartoon."""
    representation = cartoonx.representation(tuple(images.shape[-2:])).to(images.device, images.dtype)
    shapes = representation.mask_shapes(tuple(images.shape[-2:]))
    with evaluation_mode(cartoonx.classifier):
        target = cartoonx.classifier(images).argmax(1)
        measure = FixedNoiseLoss(cartoonx, images, representation, target, settings.loss_samples, settings.seed)
        predicted_mask = cartoonx.predicted_mask(images, target)
        one_pass = measure(predicted_mask)
        one_pass_ms = one_pass_ms_per_image(cartoonx, images)
        ones = optimisation_curve(cartoonx, images, representation, target, ones_mask(shapes, len(images),
                                  images.device, images.dtype), settings.steps, settings.every, measure, settings.seed,
                                  "CartoonX from all-ones")
        predicted = optimisation_curve(cartoonx, images, representation, target, predicted_mask,
                                       settings.predictor_steps, settings.predictor_every, measure, settings.seed,
                                       "CartoonX from the predicted mask")
    optimum = ones.loss[-1]
    reached = steps_to_reach(predicted, optimum)
    one_pass_loss = float(one_pass.loss.mean())
    plot_path = Path(report_dir) / PLOT_NAME
    plot_curves(ones, predicted, one_pass_loss, reached, plot_path, settings)
    seconds_per_step = predicted.seconds / max(settings.predictor_steps, 1) / len(images)
    cartoons = [cartoonx.visualize(images, masks, representation).expand_as(images)
                for masks in (predicted_mask, ones.masks, predicted.masks)]
    return {
        "settings": {**asdict(settings), "images": len(images), "lam": cartoonx.lam, "lr": cartoonx.lr,
                     "distortion": cartoonx.distortion, "levels": representation.levels,
                     "wavelet": representation.wavelet, "mode": representation.mode,
                     "device": str(images.device)},
        "steps_to_optimum": reached,
        "one_pass_loss_ratio": one_pass_loss / optimum,
        "one_pass_loss": one_pass_loss,
        "one_pass_distortion": float(one_pass.distortion.mean()),
        "one_pass_l1": float(one_pass.l1.mean()),
        "ones_final_loss": optimum,
        "predictor_final_loss": predicted.loss[-1],
        "one_pass_ms_per_image": one_pass_ms,
        "cartoonx_s_per_image": ones.seconds / len(images),
        "predictor_cartoonx_s_per_image": None if reached is None else reached * seconds_per_step,
        "ones_curve": {"steps": ones.steps, "loss": ones.loss},
        "predictor_curve": {"steps": predicted.steps, "loss": predicted.loss},
        "plot": str(plot_path),
        "panel": torch.stack([images, *cartoons], 1).cpu(),
    }
