"""CartoonX: RDE in the wavelet domain, shown as the piece-wise smooth image the mask keeps.

Kolek et al., "Cartoon Explanations of Image Classifiers" (ECCV 2022), Algorithm 1, with the
paper's defaults: Daubechies 3, zero padding, lambda 20, Adam lr 1e-3, 2000 steps, L = 64
adaptive-noise samples per step, J = 5 levels at 256 px (fewer for smaller images).
"""

from __future__ import annotations

import torch
from torch import nn

from dxai.errors import DXAIError
from dxai.explain.classifier_wrapper import evaluation_mode
from dxai.explain.inputs import Target, resolve_target
from dxai.explain.rde import RDE, RDEObjective, Schedule
from dxai.normalization import Normalization
from dxai.wavelets import (
    DEFAULT_MODE,
    DEFAULT_WAVELET,
    Bands,
    Shapes,
    WaveletTransform,
    apply_mask,
    check_levels,
    default_levels,
    ones_mask,
)

START_SEED_OFFSET = 2_000_003  # the start selection's scoring draws: apart from every optimisation's and the bank's
STARTS = ("predictor", "blend", "ones")  # the candidates: the predicted mask, (predicted + 1) / 2, all-ones


class CartoonX(RDE):
    """CartoonX explainer: ``CartoonX(classifier).attribute(images)`` -> masks (B, K);
    ``explain`` -> ``Explanation`` with the cartoon image; ``optimize`` -> ``RDEResult``.

    ``levels`` (J) defaults to ``dxai.wavelets.default_levels`` of the image size; the mask
    has one entry per wavelet coefficient position, level and orientation, shared across
    colour channels. The explanation is the greyscale image's DWT times the mask, inverted
    and clamped to [0, 1]. With a ``mask_predictor`` (``dxai.nets.mask_predictor``: [0, 1]
    images and classes in, masks out), ``init="predictor"`` (given here as the default, or per
    call) starts from its mask. From any given mask the optimisation follows ``refine_schedule``
    (``"refine"``: a higher, decaying learning rate chosen for a predicted start, with an all-ones
    track beside it after 10 % of the steps, ``Schedule.ones_track_from``; ``"paper"`` or None: the
    constant ``lr``), from all-ones the paper's constant ``lr``.

    Start selection (``init="predictor"``, with ``start_l1_weight`` set): per image, the
    predicted mask, its blend with all-ones and all-ones are scored on ``start_samples`` fixed
    noise draws (seeded apart from the optimisation's) with ``distortion + start_l1_weight * l1``,
    and the refinement starts from the lowest. The l1 weight is below ``lam`` on purpose: the
    refinement pays l1 off in a few dozen steps, a lost decision (a high distortion) it may never
    win back; with ``lam`` itself every image would keep the predicted mask (all-ones costs
    ``lam``). ``RDEResult.start`` says which start each image got.

    Example::

        cartoonx = CartoonX(classifier, normalization=Normalization.symmetric(3))
        explanation = cartoonx.explain(images)       # images (B, 3, H, W) in [0, 1]
        explanation.cartoon                          # (B, 1, H, W), the piece-wise smooth explanation
    """

    def __init__(self, classifier: nn.Module, *, normalization: Normalization | None = None,
                 levels: int | None = None, wavelet: str = DEFAULT_WAVELET, mode: str = DEFAULT_MODE,
                 lam: float = 20.0, lr: float = 1e-3, steps: int = 2000, num_samples: int = 64,
                 distortion: str = "label", samples_per_call: int = 128, mask_predictor: nn.Module | None = None,
                 init: str = "ones", class_names: list[str] | None = None,
                 refine_schedule: Schedule | str | dict | None = "refine", start_l1_weight: float | None = None,
                 start_samples: int = 8):
        super().__init__(classifier, normalization=normalization, lam=lam, lr=lr, steps=steps,
                         num_samples=num_samples, distortion=distortion, samples_per_call=samples_per_call,
                         class_names=class_names, refine_schedule=refine_schedule)
        self.levels, self.wavelet, self.mode = levels, wavelet, mode
        self.mask_predictor, self.init = mask_predictor, init
        if start_samples < 1:
            raise DXAIError(f"start_samples must be at least 1, not {start_samples}")
        self.start_l1_weight, self.start_samples = start_l1_weight, start_samples

    def representation(self, img_size: tuple[int, int]) -> WaveletTransform:
        levels = default_levels(img_size) if self.levels is None else self.levels
        check_levels(levels, img_size)
        return WaveletTransform(levels, self.wavelet, self.mode)

    def visualize(self, images: torch.Tensor, masks: Bands, representation: WaveletTransform) -> torch.Tensor:
        """IDWT(mask * DWT(greyscale image)), clamped to [0, 1]; greyscale is the channel mean
        as in the authors' code."""
        with torch.no_grad():
            grey = images.mean(1, keepdim=True)
            kept = apply_mask(representation.decompose(grey), masks)
            return representation.reconstruct(kept, tuple(images.shape[-2:])).clamp(0, 1)

    def optimize(self, images: torch.Tensor, target: Target = None, *, init: str | torch.Tensor | Bands | None = None,
                 **options):
        """``RDE.optimize``, from ``init`` (default: the one given to the constructor)."""
        return super().optimize(images, target, init=self.init if init is None else init, **options)

    def predicted_mask(self, images: torch.Tensor, target: Target = None) -> Bands:
        """The mask predictor's one-pass masks for ``images`` (B, C, H, W) in [0, 1] and the
        classes ``target`` (default: the predicted ones), without gradients."""
        if self.mask_predictor is None:
            raise DXAIError("init='predictor' needs a mask predictor: CartoonX(classifier, mask_predictor=...)")
        images = self.check(images)
        with torch.no_grad(), evaluation_mode(self.classifier), evaluation_mode(self.mask_predictor):
            target = resolve_target(target, self.classifier(images).softmax(-1), self.class_names)
            return [band.clamp(0, 1) for band in self.mask_predictor(images, target)]

    def start_scores(self, images: torch.Tensor, target: torch.Tensor, candidates: list[Bands],
                     representation: WaveletTransform | None = None) -> torch.Tensor:
        """The start selection's score of every candidate mask (each a band list for ``images``):
        (len(candidates), B), on ``start_samples`` noise draws per image seeded by its batch index."""
        batch = len(images)
        representation = representation or self.representation(tuple(images.shape[-2:])).to(images.device,
                                                                                             images.dtype)
        with torch.no_grad(), evaluation_mode(self.classifier):
            objective = RDEObjective(self.classifier, images, representation, target, self.lam, self.start_samples,
                                     self.distortion).select(list(range(batch)) * len(candidates))
            generators = [torch.Generator(device=images.device).manual_seed(START_SEED_OFFSET + row % batch)
                          for row in range(batch * len(candidates))]
            masks = [torch.cat(bands) for bands in zip(*candidates, strict=True)]
            terms = objective.evaluate(masks, generators, max(self.samples_per_call, self.start_samples))
        return (terms.distortion + self.start_l1_weight * terms.l1).view(len(candidates), batch)

    def select_start(self, images: torch.Tensor, target: torch.Tensor, predicted: Bands,
                     representation: WaveletTransform | None = None) -> tuple[Bands, list[str]]:
        """Per image, the lowest-scoring start of ``STARTS`` for the predicted mask ``predicted``,
        and its name (without ``start_l1_weight``: the predicted mask for every image)."""
        if self.start_l1_weight is None:
            return predicted, [STARTS[0]] * len(images)
        ones = ones_mask([tuple(band.shape[1:]) for band in predicted], len(images), images.device, images.dtype)
        candidates = [predicted, [0.5 * (band + 1) for band in predicted], ones]
        choice = self.start_scores(images, target, candidates, representation).argmin(0)
        masks = [torch.stack(bands)[choice, torch.arange(len(images), device=images.device)]
                 for bands in zip(*candidates, strict=True)]
        return masks, [STARTS[int(index)] for index in choice]

    def initial_start(self, init: str | torch.Tensor | Bands, shapes: Shapes, images: torch.Tensor,
                      target: torch.Tensor) -> tuple[Bands, list[str] | None]:
        """``init="predictor"``: the selected start (``select_start``) and its name per image."""
        if isinstance(init, str) and init == "predictor":
            predicted = super().initial_masks(self.predicted_mask(images, target), shapes, images, target)
            return self.select_start(images, target, predicted)
        return super().initial_start(init, shapes, images, target)

    def initial_masks(self, init: str | torch.Tensor | Bands, shapes: Shapes, images: torch.Tensor,
                      target: torch.Tensor) -> Bands:
        """``RDE.initial_masks``, and ``"predictor"``: the mask predictor's masks for ``target``."""
        if isinstance(init, str) and init == "predictor":
            init = self.predicted_mask(images, target)
        return super().initial_masks(init, shapes, images, target)
