"""Rate-distortion explanations (RDE): obfuscation, distortion, loss and the mask optimisation.

RDE explains a classifier's decision on an image x = f(h), given in a representation h (the
wavelet coefficients for CartoonX, the pixels for Pixel RDE), by a sparse mask s in [0, 1]
over h that keeps the decision when the rest of h is replaced by noise (CartoonX paper,
Algorithm 1)::

    y_l  = clamp(f(s * h + (1 - s) * v_l), 0, 1)      v_l ~ adaptive Gaussian noise, l = 1..L
    loss = mean_l d(Phi(x), Phi(y_l)) + lambda * ||s||_1 / (number of mask entries)

Coefficients and masks are band lists (see ``dxai.wavelets``): masks have one channel that
is shared across the colour channels. The loss of each image depends on that image alone
(its own noise generator, its own mask), and the batch loss is the *sum* over images, so
that Adam, which acts elementwise, optimises every image of a batch exactly as it would
alone. ``RDEObjective.loss`` is the same objective as one differentiable function, for training
a network that predicts masks.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from dxai.errors import DXAIError
from dxai.explain.classifier_wrapper import as_unit_range_classifier, evaluation_mode, expected_channels
from dxai.explain.inputs import Target, check_images, class_indices, resolve_target
from dxai.explanation import Explanation
from dxai.normalization import Normalization
from dxai.wavelets import Bands, ImageSize, Shapes, flatten_mask, mask_size, ones_mask, unflatten_mask

DISTORTIONS = ("label", "l2", "kl", "maximize_target")
Generators = torch.Generator | Sequence[torch.Generator] | None


class Representation(Protocol):
    """A differentiable invertible representation x = f(h) with band-list coefficients."""

    def decompose(self, images: torch.Tensor) -> Bands: ...

    def reconstruct(self, bands: Bands, size: tuple[int, int] | None = None) -> torch.Tensor: ...

    def mask_shapes(self, img_size: ImageSize) -> Shapes: ...


@dataclass(frozen=True)
class AdaptiveNoise:
    """Gaussian noise with the empirical mean and std of each band of each image (paper eq. 5).

    A band is one group of the partition: the low-pass band and each wavelet level (all its
    orientations and channels) for CartoonX, all pixels for Pixel RDE.
    """

    mean: list[list[float]]   # [image][band]
    std: list[list[float]]

    @classmethod
    def of(cls, coefficients: Bands) -> AdaptiveNoise:
        mean = torch.stack([band.flatten(1).mean(1) for band in coefficients], dim=1)
        std = torch.stack([band.flatten(1).std(1, correction=0) for band in coefficients], dim=1)
        return cls(mean.tolist(), std.tolist())

    def sample(self, band_shapes: Shapes, num_samples: int, images: range, generators: list,
               like: torch.Tensor) -> Bands:
        """Noise for ``images`` (indices into the batch): bands of (len(images), L, *band_shape).

        Each image draws from its own generator, band after band, so its noise does not depend
        on which other images are drawn with it.
        """
        noise = [like.new_empty(len(images), num_samples, *shape) for shape in band_shapes]
        for row, image in enumerate(images):
            for band_index, band in enumerate(noise):
                band[row].normal_(self.mean[image][band_index], self.std[image][band_index],
                                  generator=generators[image])
        return noise


def obfuscate(coefficients: Bands, masks: Bands, noise: Bands) -> Bands:
    """``s * h + (1 - s) * v`` for every noise sample: (B, C, ...), (B, 1, ...), (B, L, C, ...)
    -> (B, L, C, ...)."""
    return [torch.lerp(v, h.unsqueeze(1), s.unsqueeze(1)) for h, s, v in zip(coefficients, masks, noise, strict=True)]


def obfuscated_images(representation: Representation, coefficients: Bands, masks: Bands, noise: Bands,
                      size: tuple[int, int]) -> torch.Tensor:
    """The obfuscations of (H, W) = ``size`` images in pixel space, clamped to [0, 1]: (B, L, C, H, W)."""
    mixed = obfuscate(coefficients, masks, noise)
    batch, samples = mixed[0].shape[:2]
    images = representation.reconstruct([band.flatten(0, 1) for band in mixed], size)
    # hardtanh is clamp(0, 1) with a single-pass backward (and a zero gradient on the bounds themselves).
    # Channels-last: oneDNN's convolutions run the classifier's first layer, whose 1 to 4 input channels
    # make NCHW its slowest case, forward and backward 1.25x (ResNet18, 256 px) to 2.5x (the paper's
    # small CNN, 32 px) faster (docs/experiments.md).
    images = F.hardtanh(images, 0.0, 1.0).contiguous(memory_format=torch.channels_last)
    return images.unflatten(0, (batch, samples))


def distortion_terms(logits: torch.Tensor, reference: torch.Tensor, target: torch.Tensor,
                     measure: str = "label") -> torch.Tensor:
    """d(Phi(x), Phi(y_l)) of every obfuscation: logits (B, L, K), reference probabilities of
    the images (B, K), target (B,) -> (B, L). All measures act on post-softmax outputs:

    - ``label``: (p_t(x) - p_t(y))^2, the paper's default
    - ``l2``: ||p(x) - p(y)||_2^2
    - ``kl``: KL(p(x) || p(y))
    - ``maximize_target``: (1 - p_t(y))^2
    """
    index = target.view(-1, 1, 1).expand(-1, logits.shape[1], 1)
    if measure == "label":
        probabilities = logits.softmax(-1).gather(-1, index).squeeze(-1)
        return (reference.gather(1, target.view(-1, 1)) - probabilities) ** 2
    if measure == "l2":
        return ((reference.unsqueeze(1) - logits.softmax(-1)) ** 2).sum(-1)
    if measure == "kl":
        log_reference = reference.clamp_min(torch.finfo(reference.dtype).tiny).log().unsqueeze(1)
        return (reference.unsqueeze(1) * (log_reference - logits.log_softmax(-1))).sum(-1)
    if measure == "maximize_target":
        return (1 - logits.softmax(-1).gather(-1, index).squeeze(-1)) ** 2
    raise DXAIError(f"unknown distortion measure {measure!r}; choose one of {DISTORTIONS}")


def l1_norm(masks: Bands) -> torch.Tensor:
    """||s||_1 / (number of mask entries) per image: (B,)."""
    entries = sum(band[0].numel() for band in masks)
    return sum(band.abs().flatten(1).sum(1) for band in masks) / entries


@dataclass
class RDELoss:
    """Per-image terms of the RDE loss, each (B,): ``loss = distortion + lam * l1``."""

    distortion: torch.Tensor
    l1: torch.Tensor
    loss: torch.Tensor


def _generator_list(generators: Generators, batch_size: int) -> list:
    if generators is None or isinstance(generators, torch.Generator):
        return [generators] * batch_size
    generators = list(generators)
    if len(generators) != batch_size:
        raise DXAIError(f"got {len(generators)} noise generators for {batch_size} images; give one per image")
    return generators


def _chunks(batch_size: int, num_samples: int, samples_per_call: int) -> Iterator[tuple[range, slice]]:
    """(images, samples) blocks of at most ``samples_per_call`` obfuscations, image-major.

    The blocks of one image depend on ``num_samples`` and ``samples_per_call`` only, never on
    the batch size, so an image draws the same noise in any batch.
    """
    if num_samples <= samples_per_call:
        images_per_call = samples_per_call // num_samples
        for start in range(0, batch_size, images_per_call):
            yield range(start, min(start + images_per_call, batch_size)), slice(0, num_samples)
    else:
        for image in range(batch_size):
            for start in range(0, num_samples, samples_per_call):
                yield range(image, image + 1), slice(start, min(start + samples_per_call, num_samples))


class RDEObjective:
    """The RDE loss of masks on one batch of images.

    What all steps of an optimisation share is computed once, without gradients: the
    coefficients h of the images, their noise statistics, and the classifier's reference
    probabilities p(x). ``classifier`` takes [0, 1] images, returns logits and should be in
    eval mode.
    """

    def __init__(self, classifier: nn.Module, images: torch.Tensor, representation: Representation,
                 target: Target = None, lam: float = 20.0,
                 num_samples: int = 64, distortion: str = "label"):
        if distortion not in DISTORTIONS:
            raise DXAIError(f"unknown distortion measure {distortion!r}; choose one of {DISTORTIONS}")
        if num_samples < 1:
            raise DXAIError(f"the number of noise samples must be at least 1, not {num_samples}")
        self.classifier, self.representation = classifier, representation
        self.lam, self.num_samples, self.distortion = lam, num_samples, distortion
        images = images.detach()
        with torch.no_grad():
            self.coefficients = representation.decompose(images)
            self.reference = classifier(images).softmax(-1)
        self.noise = AdaptiveNoise.of(self.coefficients)
        self.target = resolve_target(target, self.reference)
        self.band_shapes = [tuple(band.shape[1:]) for band in self.coefficients]
        self.image_size = tuple(images.shape[-2:])

    @property
    def batch_size(self) -> int:
        return self.reference.shape[0]

    def select(self, rows: Sequence[int]) -> RDEObjective:
        """The objective of the images ``rows`` (indices into the batch, repeats allowed), in that
        order, sharing what was computed: row r of the result is image ``rows[r]`` of this one."""
        rows = [int(row) for row in rows]
        index = torch.tensor(rows, device=self.reference.device)
        view = copy.copy(self)
        view.coefficients = [band[index] for band in self.coefficients]
        view.reference, view.target = self.reference[index], self.target[index]
        view.noise = AdaptiveNoise([self.noise.mean[row] for row in rows], [self.noise.std[row] for row in rows])
        return view

    def with_samples(self, num_samples: int) -> RDEObjective:
        """The same objective with ``num_samples`` noise draws per image (what was computed is shared)."""
        view = copy.copy(self)
        view.num_samples = num_samples
        return view

    def loss(self, masks: Bands, generators: Generators = None) -> RDELoss:
        """The per-image RDE loss, differentiable w.r.t. ``masks``; all B * L obfuscations go
        through the classifier in one call."""
        generators = _generator_list(generators, self.batch_size)
        distortion = self._distortion_sum(masks, range(self.batch_size), slice(0, self.num_samples),
                                          generators) / self.num_samples
        l1 = l1_norm(masks)
        return RDELoss(distortion, l1, distortion + self.lam * l1)

    def backward(self, masks: Bands, generators: Generators = None, samples_per_call: int = 128) -> RDELoss:
        """Accumulate the gradient of the summed per-image loss into ``masks[i].grad``, running at
        most ``samples_per_call`` obfuscations through the classifier at once; returns the
        detached per-image loss."""
        with torch.enable_grad():
            return self._chunked_loss(masks, generators, samples_per_call, with_gradients=True)

    def evaluate(self, masks: Bands, generators: Generators = None, samples_per_call: int = 128) -> RDELoss:
        """The per-image loss without gradients, in blocks of ``samples_per_call`` obfuscations."""
        with torch.no_grad():
            return self._chunked_loss(masks, generators, samples_per_call, with_gradients=False)

    def _chunked_loss(self, masks: Bands, generators: Generators, samples_per_call: int,
                      with_gradients: bool) -> RDELoss:
        generators = _generator_list(generators, self.batch_size)
        distortion = torch.zeros_like(self.reference[:, 0])
        for images, samples in _chunks(self.batch_size, self.num_samples, samples_per_call):
            part = self._distortion_sum(masks, images, samples, generators) / self.num_samples
            if with_gradients:
                part.sum().backward(inputs=masks)
            distortion[images.start:images.stop] += part.detach()
        l1 = l1_norm(masks)
        if with_gradients:
            (self.lam * l1).sum().backward(inputs=masks)
        l1 = l1.detach()
        return RDELoss(distortion, l1, distortion + self.lam * l1)

    def _distortion_sum(self, masks: Bands, images: range, samples: slice, generators: list) -> torch.Tensor:
        """Sum over the ``samples`` of each of ``images`` of their distortion: (len(images),)."""
        rows = slice(images.start, images.stop)
        count = samples.stop - samples.start
        noise = self.noise.sample(self.band_shapes, count, images, generators, like=self.coefficients[0])
        obfuscations = obfuscated_images(self.representation, [band[rows] for band in self.coefficients],
                                         [band[rows] for band in masks], noise, self.image_size)
        logits = self.classifier(obfuscations.flatten(0, 1)).unflatten(0, (len(images), count))
        terms = distortion_terms(logits, self.reference[rows], self.target[rows], self.distortion)
        return terms.sum(1)


TRACK_SELECTION_SAMPLES = 8         # fixed noise draws per image that choose between the two tracks
ONES_TRACK_SEED_OFFSET = 7_919_001  # the all-ones track's draws apart from the first track's
SELECTION_SEED_OFFSET = 104_729     # the choice's draws apart from both tracks'
ONES_TRACK = "all-ones track"       # RDEResult.start of an image whose returned mask is the all-ones track's


@dataclass(frozen=True)
class Schedule:
    """How an RDE optimisation steps: Adam at ``lr``, decayed along a cosine to ``lr * final_lr_fraction``
    over the run's steps (1: constant), with ``num_samples`` noise draws per step (None: the explainer's L).

    ``l1_at_zero``: an entry at 0 feels the l1 term's derivative into the mask's range, lam / entries,
    instead of autograd's 0 for ``abs`` there, so a dropped coefficient comes back only where the
    distortion's pull outweighs its cost. With autograd's 0, Adam, which scales every step to about lr,
    lifts every dropped entry whose distortion gradient points up, however faintly, to lr at the first
    step: a sparse start is sprayed with mass that later steps must remove again.

    ``ones_track_from``: after this fraction of the run's steps an all-ones track joins every image's
    optimisation, and from then on each track takes half of the noise draws (the work of a step is
    unchanged); the result is, per image, the track with the lower loss on ``TRACK_SELECTION_SAMPLES``
    fixed draws (``MaskOptimizer.chosen``). A refinement whose given start leads into a worse optimum
    than all-ones' so still reaches it, while the first steps, where a good start gains most, keep all
    the draws (docs/experiments.md). None: one track.
    """

    lr: float
    final_lr_fraction: float = 1.0
    num_samples: int | None = None
    l1_at_zero: bool = False
    ones_track_from: float | None = None

    def lr_at(self, step: int, steps: int) -> float:
        if steps <= 1 or self.final_lr_fraction == 1.0:
            return self.lr
        fraction = self.final_lr_fraction + (1 - self.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * step / steps))
        return self.lr * fraction


SCHEDULES = {
    "paper": Schedule(lr=1e-3),                                # CartoonX paper, Algorithm 1, from all-ones
    # from a given mask (docs/experiments.md)
    "refine": Schedule(lr=3e-2, final_lr_fraction=0.1, l1_at_zero=True, ones_track_from=0.1),
}


def as_schedule(schedule: Schedule | str | dict | None) -> Schedule | None:
    """A ``Schedule`` from itself, a name of ``SCHEDULES`` or its fields as a dict (as model.json stores it)."""
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise DXAIError(f"unknown schedule {schedule!r}; choose one of {sorted(SCHEDULES)} or give a Schedule")
        return SCHEDULES[schedule]
    return Schedule(**schedule) if isinstance(schedule, dict) else schedule


class MaskOptimizer:
    """Adam on a batch of masks, each projected back to [0, 1] after every step (Algorithm 1)."""

    def __init__(self, objective: RDEObjective, initial_masks: Bands, lr: float = 1e-3,
                 seeds: Sequence[int] | None = None, samples_per_call: int = 128,
                 schedule: Schedule | None = None, total_steps: int = 0):
        """``seeds``: one per image, by default 0, 1, ..., B - 1. ``schedule`` (with the run's
        ``total_steps``) decays the learning rate; without one it stays ``lr``."""
        self.objective, self.samples_per_call = objective, samples_per_call
        self.schedule = schedule or Schedule(lr)
        self.total_steps, self.steps_done = total_steps, 0
        self.masks = [band.detach().clone().requires_grad_(True) for band in initial_masks]
        self.optimizer = torch.optim.Adam(self.masks, lr=self.schedule.lr)
        self.seeds = [int(seed) for seed in (range(objective.batch_size) if seeds is None else seeds)]
        device = initial_masks[0].device
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in self.seeds]
        self.ones_track: MaskOptimizer | None = None
        fraction = self.schedule.ones_track_from
        joins = None if fraction is None else math.ceil(fraction * total_steps - 1e-9)  # after that share of steps
        shared = joins is not None and joins < total_steps and objective.num_samples > 1
        self.ones_track_step = joins if shared else None

    def _start_ones_track(self) -> None:
        """The all-ones track (its own seeds, Adam state and the schedule's remaining steps); each track
        takes half of the draws from here on."""
        draws = self.objective.num_samples
        self.objective = self.objective.with_samples(draws - draws // 2)
        self.ones_track = MaskOptimizer(
            self.objective.with_samples(draws // 2), [torch.ones_like(band) for band in self.masks],
            seeds=[seed + ONES_TRACK_SEED_OFFSET for seed in self.seeds], samples_per_call=self.samples_per_call,
            schedule=replace(self.schedule, ones_track_from=None), total_steps=self.total_steps - self.steps_done)

    def chosen(self, rows: Sequence[int] | None = None) -> tuple[Bands, list[bool]]:
        """The masks the optimisation returns now for the images ``rows`` (default: all), and per image
        whether they are the all-ones track's: per image the track with the lower loss on
        ``TRACK_SELECTION_SAMPLES`` draws, the same draws for both tracks and at every call (one track:
        its masks)."""
        rows = list(range(len(self.seeds))) if rows is None else list(rows)
        masks = [band.detach()[rows] for band in self.masks]
        if self.ones_track is None:
            return masks, [False] * len(rows)
        count = len(rows)
        both = [torch.cat([mine, ones.detach()[rows]]) for mine, ones in zip(masks, self.ones_track.masks, strict=True)]
        generators = [torch.Generator(device=masks[0].device).manual_seed(self.seeds[row] + SELECTION_SEED_OFFSET)
                      for row in rows * 2]
        scoring = self.objective.with_samples(TRACK_SELECTION_SAMPLES).select(rows * 2)
        loss = scoring.evaluate(both, generators, self.samples_per_call).loss
        ones_better = loss[count:] < loss[:count]
        chosen = [torch.where(ones_better.view(-1, *[1] * (band.dim() - 1)), band[count:], band[:count])
                  for band in both]
        return chosen, ones_better.tolist()

    def step(self) -> RDELoss:
        """One update; returns the per-image loss of the masks before it (of the first track's, on its
        draws, once an all-ones track runs beside it)."""
        if self.steps_done == self.ones_track_step:
            self._start_ones_track()
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule.lr_at(self.steps_done, self.total_steps)
        self.optimizer.zero_grad(set_to_none=True)
        losses = self.objective.backward(self.masks, self.generators, self.samples_per_call)
        if self.schedule.l1_at_zero:
            cost = self.objective.lam / sum(band[0].numel() for band in self.masks)
            for band in self.masks:
                band.grad.add_((band.detach() == 0).to(band.dtype), alpha=cost)
        self.optimizer.step()
        self.steps_done += 1
        with torch.no_grad():
            for band in self.masks:
                band.clamp_(0, 1)
        if self.ones_track is not None:
            self.ones_track.step()
        return losses


@dataclass
class RDEHistory:
    """The loss terms of every step, evaluated on the masks before that step's update: (steps, B)."""

    distortion: torch.Tensor
    l1: torch.Tensor
    loss: torch.Tensor

    @property
    def mean_distortion(self) -> torch.Tensor:
        return self.distortion.mean(1)

    @property
    def mean_loss(self) -> torch.Tensor:
        return self.loss.mean(1)


@dataclass
class RDEResult:
    """What an RDE explainer returns for a batch of B images."""

    masks: Bands                 # band list, (B, 1, ...) each, in [0, 1]
    explanations: torch.Tensor   # (B, 1, H, W) in [0, 1]: the CartoonX image, or the Pixel RDE mask
    target: torch.Tensor         # (B,) the classes explained
    probabilities: torch.Tensor  # (B, K) the classifier's softmax on the images
    history: RDEHistory
    # per image, the start chosen by a start selection (CartoonX, init="predictor"), or ONES_TRACK where the
    # schedule's all-ones track gave the returned mask (None for the others where no selection ran)
    start: list[str | None] | None = None

    @property
    def flat_masks(self) -> torch.Tensor:
        """The masks as one vector per image: (B, number of mask entries)."""
        return flatten_mask(self.masks)


class RDE(ABC):
    """An RDE explainer; subclasses fix the representation.

    ``attribute(images, target)`` returns the masks, ``explain`` an ``Explanation`` and
    ``optimize`` the whole ``RDEResult`` (masks, explanation images, loss history).

    ``classifier`` is any torch module returning logits. With ``normalization`` it takes
    images as the model expects them and the explainer applies the normalisation to its [0, 1]
    images; without, it must take [0, 1] images itself. It runs in eval mode while explaining.
    ``samples_per_call`` caps the obfuscations per classifier call (memory): the B * L of a
    step go through in as few calls as that allows, and an image's result does not depend on it
    as long as it is at least L.
    """

    def __init__(self, classifier: nn.Module, *, normalization: Normalization | None = None,
                 lam: float, lr: float = 1e-3, steps: int = 2000, num_samples: int = 64,
                 distortion: str = "label", samples_per_call: int = 128, class_names: Sequence[str] | None = None,
                 refine_schedule: Schedule | str | None = None):
        if distortion not in DISTORTIONS:
            raise DXAIError(f"unknown distortion measure {distortion!r}; choose one of {DISTORTIONS}")
        if samples_per_call < 1:
            raise DXAIError(f"samples_per_call must be at least 1, not {samples_per_call}")
        self.classifier = as_unit_range_classifier(classifier, normalization)
        self.normalization, self.class_names = normalization, class_names
        self.lam, self.lr, self.steps, self.num_samples = lam, lr, steps, num_samples
        self.distortion, self.samples_per_call = distortion, samples_per_call
        self.refine_schedule = as_schedule(refine_schedule)

    def schedule_for(self, init) -> Schedule:
        """The paper's constant ``lr`` from all-ones; ``refine_schedule`` (when set) from a given mask."""
        starts_from_ones = isinstance(init, str) and init == "ones"
        return self.refine_schedule if self.refine_schedule is not None and not starts_from_ones else Schedule(self.lr)

    @abstractmethod
    def representation(self, img_size: tuple[int, int]) -> nn.Module:
        """The representation for images of ``img_size`` (a module with the ``Representation`` methods)."""

    @abstractmethod
    def visualize(self, images: torch.Tensor, masks: Bands, representation: nn.Module) -> torch.Tensor:
        """The explanation image of each mask: (B, 1, H, W) in [0, 1]."""

    def optimize(self, images: torch.Tensor, target: Target = None, *, init: str | torch.Tensor | Bands = "ones",
                 steps: int | None = None, seed: int | Sequence[int] = 0, progress: bool = False,
                 schedule: Schedule | str | None = None) -> RDEResult:
        """Optimise the masks of ``images`` (B, C, H, W) in [0, 1] and return everything about it.

        ``target``: the class to explain per image (default: the predicted one). ``init``:
        ``"ones"`` or a mask in [0, 1], as a band list or flat (B, K); it is the step-0 mask.
        ``seed``: an int gives image i the seed ``seed + i``; or one seed per image. An image
        explained with seed s in any batch gives the mask it gives alone with seed s. ``schedule``:
        a ``Schedule`` or a name of ``SCHEDULES`` (default: ``schedule_for(init)``).
        """
        steps = self.steps if steps is None else steps
        schedule = as_schedule(schedule) or self.schedule_for(init)
        if steps < 0:
            raise DXAIError(f"the number of optimisation steps must be 0 or more, not {steps}")
        images = self.check(images)
        representation = self.representation(tuple(images.shape[-2:])).to(images.device, images.dtype)
        shapes = representation.mask_shapes(tuple(images.shape[-2:]))
        seeds = _seed_list(seed, images.shape[0])
        with evaluation_mode(self.classifier):
            objective = RDEObjective(self.classifier, images, representation, class_indices(target, self.class_names),
                                     self.lam, schedule.num_samples or self.num_samples, self.distortion)
            initial, start = self.initial_start(init, shapes, images, objective.target)
            optimizer = MaskOptimizer(objective, initial, schedule.lr, seeds, self.samples_per_call, schedule, steps)
            history = []
            bar = tqdm(range(steps), desc=type(self).__name__, disable=not progress, leave=False)
            for index in bar:
                history.append(optimizer.step())
                if progress and index % 20 == 0:
                    bar.set_postfix(loss=f"{float(history[-1].loss.mean()):.4f}")
            masks, from_ones_track = optimizer.chosen()
        if any(from_ones_track):
            start = [ONES_TRACK if ones else name for name, ones in
                     zip(start or [None] * len(masks[0]), from_ones_track, strict=True)]
        return RDEResult(masks, self.visualize(images, masks, representation), objective.target,
                         objective.reference, _stack_history(history, images), start)

    def attribute(self, images: torch.Tensor, target: Target = None, **options) -> torch.Tensor:
        """The optimised masks of ``images`` in [0, 1] as one vector per image (B, K); ``options``
        are those of ``optimize``.

        Example::

            masks = CartoonX(classifier, normalization=norm).attribute(images, target=3, steps=300)
        """
        return self.optimize(images, target, **options).flat_masks

    def explain(self, images: torch.Tensor, target: Target = None, **options) -> Explanation:
        """``optimize`` as an ``Explanation``: ``cartoon`` (the explanation image), ``mask``, the
        target, prediction and probabilities; ``images`` in the classifier's input domain."""
        result = self.optimize(images, target, **options)
        model_images = images if self.normalization is None else self.normalization.normalize(torch.as_tensor(images))
        return Explanation(images=model_images, target=result.target, predicted=result.probabilities.argmax(1),
                           probabilities=result.probabilities, cartoon=result.explanations, mask=result.flat_masks)

    def check(self, images) -> torch.Tensor:
        """``images`` validated as a float batch in [0, 1] with the classifier's channel count."""
        return check_images(images, type(self).__name__, expected_channels(self.classifier))

    def initial_start(self, init: str | torch.Tensor | Bands, shapes: Shapes, images: torch.Tensor,
                      target: torch.Tensor) -> tuple[Bands, list[str] | None]:
        """The step-0 masks and, where the explainer chose among starts, which one per image
        (here: none; ``CartoonX`` chooses for ``init="predictor"``)."""
        return self.initial_masks(init, shapes, images, target), None

    def initial_masks(self, init: str | torch.Tensor | Bands, shapes: Shapes, images: torch.Tensor,
                      target: torch.Tensor) -> Bands:
        """The step-0 masks of ``attribute``: ``"ones"``, or a mask in [0, 1] given as a band
        list or flat (B, K), checked against ``shapes``."""
        batch_size = images.shape[0]
        if isinstance(init, str):
            if init != "ones":
                raise DXAIError(f"unknown initial mask {init!r}; give 'ones' or a mask tensor")
            return ones_mask(shapes, batch_size, images.device, images.dtype)
        if isinstance(init, torch.Tensor):
            if init.shape != (batch_size, mask_size(shapes)):
                raise DXAIError(f"a flat initial mask must be (B, K) = ({batch_size}, {mask_size(shapes)}), "
                                f"not {tuple(init.shape)}")
            init = unflatten_mask(init, shapes)
        expected = [(batch_size, *shape) for shape in shapes]
        actual = [tuple(band.shape) for band in init]
        if actual != expected:
            raise DXAIError(f"the initial mask's bands must have shapes {expected}, not {actual}")
        if any(bool(((band < 0) | (band > 1)).any()) for band in init):
            raise DXAIError("the initial mask must lie in [0, 1]")
        return [band.detach().to(images.device, images.dtype) for band in init]


def _seed_list(seed: int | Sequence[int], batch_size: int) -> list[int]:
    if isinstance(seed, int):
        return [seed + index for index in range(batch_size)]
    seeds = [int(value) for value in seed]
    if len(seeds) != batch_size:
        raise DXAIError(f"got {len(seeds)} seeds for {batch_size} images; give one int or one seed per image")
    return seeds


def _stack_history(history: list[RDELoss], images: torch.Tensor) -> RDEHistory:
    def stack(name: str) -> torch.Tensor:
        if not history:
            return images.new_zeros(0, images.shape[0]).cpu()
        return torch.stack([getattr(step, name) for step in history]).cpu()

    return RDEHistory(stack("distortion"), stack("l1"), stack("loss"))
