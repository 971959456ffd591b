"""Heatmap explanations from captum, read as decompositions the way the DXAI paper does.

Every method makes a non-negative heatmap H (B x 1 x H x W) for the explained class and turns
it into parts with ``heatmap_decomposition``: w = H / max(H), distinct = w * x,
agnostic = (1 - w) * x, so ``distinct + agnostic == images`` exactly.

Signed pixel attributions (Guided Grad-CAM, Integrated Gradients, Gradient SHAP, LRP) and the
signed unit attributions of Internal Influence become H as the sum of absolute values over
channels: evidence for and against the class both mark the pixel as class-relevant. Grad-CAM
keeps its positive part (the ReLU of the Grad-CAM paper). Layer maps are upsampled to the
image size bilinearly.

All explainers share dxai's calling convention (captum-like):
``make_baseline(name, classifier, normalization=...).attribute(images, target=None)`` returns the
heatmap and ``.explain(images, target=None)`` an ``Explanation`` with the parts, for images
B x C x H x W in [0, 1] (the classifier's ``normalization`` is applied inside; without one the
classifier takes [0, 1] images) and target ``None`` (the classifier's prediction), a class index
or name, or one per image. Each call works on a fresh copy of the classifier
in eval mode with non-inplace ReLUs and frozen parameters, so the classifier passed in (its
weights, mode, hooks and requires_grad flags) is never touched and always explained as it is
at call time. ``batch_size`` bounds how many inputs reach the model in one forward pass.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import warnings

import numpy as np
import torch
from captum import attr as captum_attr
from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS
from captum.attr._utils.custom_modules import Addition_Module
from captum.attr._utils.lrp_rules import EpsilonRule
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from dxai.errors import DXAIError
from dxai.explain.inputs import Target, check_images, resolve_target
from dxai.explanation import Explanation, heatmap_decomposition
from dxai.normalization import Normalization

MIN_LAYER_SIDE = 4  # the coarsest layer map (in cells per side) the default layer may have
BLACK = -1.0  # a black image in the model domain, the reference of the path methods


def default_layer(model: nn.Module, images: torch.Tensor | None = None) -> nn.Module:
    """The module whose output Grad-CAM, Guided Grad-CAM and Internal Influence explain.

    For a torchvision ResNet (also inside a wrapper): the deepest of ``layer4``, ``layer3``,
    ``layer2`` whose output on ``images`` is at least 4 x 4, else ``layer1`` (``layer4`` when
    no images are given). With the ImageNet stem ``layer4`` is 7 x 7 at 224 px; with dxai's
    small-image stem ``layer4`` is only 2 x 2 at 32 px, so ``layer3`` (4 x 4) is used there,
    and ``layer4`` from 64 px. For any other classifier: its last ``nn.Conv2d``
    (``features[3]`` of the simple CNN).
    """
    resnet = next((module for module in model.modules() if isinstance(module, ResNet)), None)
    if resnet is not None:
        stages = [resnet.layer4, resnet.layer3, resnet.layer2]
        if images is None:
            return stages[0]
        sides = _output_sides(model, stages, images[:1])
        return next((stage for stage in stages if sides[stage] >= MIN_LAYER_SIDE), resnet.layer1)
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise DXAIError(f"{type(model).__name__} has no nn.Conv2d to explain; pass layer= explicitly")
    return convs[-1]


def _output_sides(model: nn.Module, modules: list[nn.Module], images: torch.Tensor) -> dict:
    """The smaller spatial side of each module's output on ``images``, from one eval-mode
    forward pass; the model's train/eval flags are restored afterwards."""
    sides = {}
    modes = {module: module.training for module in model.modules()}
    handles = [module.register_forward_hook(lambda m, i, out: sides.__setitem__(m, min(out.shape[-2:])))
               for module in modules]
    try:
        model.eval()
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return sides


def _frozen_copy(classifier: nn.Module) -> nn.Module:
    model = copy.deepcopy(classifier).eval()
    model.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False  # captum's backward hooks fail on in-place outputs
    return model


def _abs_channel_sum(attribution: torch.Tensor) -> torch.Tensor:
    return attribution.abs().sum(1, keepdim=True)


def _upsample(layer_map: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return captum_attr.LayerAttribution.interpolate(layer_map, tuple(images.shape[-2:]),
                                                    interpolate_mode="bilinear")


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """Seed torch's and numpy's global generators (captum draws from both) for one block and
    restore them afterwards."""
    numpy_state = np.random.get_state()
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)


class HeatmapBaseline(abc.ABC):
    """Base of the heatmap explainers: prediction, target, chunking and the decomposition.

    Subclasses implement ``_heatmap(model, images, target)`` on one chunk of at most
    ``_chunk_images`` images, given the prepared copy of the classifier.
    """

    def __init__(self, classifier: nn.Module, batch_size: int = 32, *, normalization: Normalization | None = None,
                 class_names: list[str] | None = None):
        if batch_size < 1:
            raise DXAIError(f"batch_size must be at least 1, not {batch_size}")
        self.classifier = classifier
        self.batch_size = batch_size
        self.normalization, self.class_names = normalization, class_names

    def attribute(self, images: torch.Tensor, target: Target = None) -> torch.Tensor:
        """The heatmap (B, 1, H, W), >= 0, of ``images`` (B, C, H, W) in [0, 1] for ``target``."""
        return self.explain(images, target).heatmap

    def explain(self, images: torch.Tensor, target: Target = None) -> Explanation:
        """The heatmap and its parts (distinct = w * x, agnostic = (1 - w) * x, in the classifier's
        input domain) of ``images`` (B, C, H, W) in [0, 1]."""
        images = check_images(images, type(self).__name__).detach()
        if self.normalization is not None:
            images = self.normalization.normalize(images)
        model = self._prepare(_frozen_copy(self.classifier))
        with torch.no_grad():
            logits = torch.cat([model(chunk) for chunk in images.split(self.batch_size)])
        probabilities = logits.softmax(1)
        predicted = probabilities.argmax(1)
        target = resolve_target(target, probabilities, self.class_names)
        with torch.enable_grad():
            heatmap = torch.cat([self._heatmap(model, chunk.clone().requires_grad_(), chunk_target).detach()
                                 for chunk, chunk_target in zip(images.split(self._chunk_images),
                                                                target.split(self._chunk_images))])
        distinct, agnostic = heatmap_decomposition(images, heatmap)
        return Explanation(images=images, target=target, predicted=predicted,
                           probabilities=probabilities, heatmap=heatmap,
                           distinct=distinct, agnostic=agnostic)

    @property
    def _chunk_images(self) -> int:
        return self.batch_size

    def _prepare(self, model: nn.Module) -> nn.Module:
        return model

    @abc.abstractmethod
    def _heatmap(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The B x 1 x H x W map, >= 0, of one chunk (images require grad)."""


class LayerBaseline(HeatmapBaseline):
    """A method that explains a layer's output; ``layer`` is a module of the classifier, its
    dotted name, or None for ``default_layer`` (chosen on the images of each call)."""

    def __init__(self, classifier: nn.Module, layer: nn.Module | str | None = None, batch_size: int = 32, **common):
        super().__init__(classifier, batch_size, **common)
        self.layer_name = self._layer_name(classifier, layer)

    @staticmethod
    def _layer_name(classifier: nn.Module, layer) -> str | None:
        if layer is None:
            return None
        if isinstance(layer, str):
            try:
                classifier.get_submodule(layer)
            except AttributeError as error:
                raise DXAIError(f"the classifier has no layer named {layer!r}") from error
            return layer
        name = next((name for name, module in classifier.named_modules() if module is layer), None)
        if name is None:
            raise DXAIError(f"layer {type(layer).__name__} is not a module of the classifier")
        return name

    def _layer(self, model: nn.Module, images: torch.Tensor) -> nn.Module:
        if self.layer_name is None:
            return default_layer(model, images)
        return model.get_submodule(self.layer_name)


class RandomBaseline(HeatmapBaseline):
    """Uniform noise in [0, 1) as the heatmap, from a generator seeded at construction: the
    n-th call of two explainers made with the same seed gives the same maps on any device."""

    def __init__(self, classifier: nn.Module, seed: int = 0, batch_size: int = 32, **common):
        super().__init__(classifier, batch_size, **common)
        self._generator = torch.Generator().manual_seed(seed)

    def _heatmap(self, model, images, target):
        shape = (len(images), 1, *images.shape[-2:])
        return torch.rand(shape, generator=self._generator).to(images)


class GradCamBaseline(LayerBaseline):
    """Grad-CAM (captum ``LayerGradCam`` with ``relu_attributions=True``): the ReLU of the
    gradient-weighted channel sum at the layer, upsampled bilinearly."""

    def _heatmap(self, model, images, target):
        cam = captum_attr.LayerGradCam(model, self._layer(model, images))
        return _upsample(cam.attribute(images, target=target, relu_attributions=True), images)


class GuidedGradCamBaseline(LayerBaseline):
    """Guided Grad-CAM (captum ``GuidedGradCam``): guided backpropagation times the bilinearly
    upsampled Grad-CAM map; H is the absolute value summed over channels."""

    def _heatmap(self, model, images, target):
        method = captum_attr.GuidedGradCam(model, self._layer(model, images))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
            attribution = method.attribute(images, target=target, interpolate_mode="bilinear")
        return _abs_channel_sum(attribution)


class IntegratedGradientsBaseline(HeatmapBaseline):
    """Integrated Gradients (captum) from a constant image ``baseline`` in the model domain,
    by default black (-1), the reference of Sundararajan et al. (2017), with ``n_steps``
    Gauss-Legendre steps; H is the absolute value summed over channels.

    captum's own default, 0, is mid-grey in dxai's [-1, 1] domain; on the synthetic shapes it
    credits the dark background more than the (brighter) class part, black does the opposite.
    """

    def __init__(self, classifier: nn.Module, n_steps: int = 50, baseline: float = BLACK,
                 batch_size: int = 32, **common):
        super().__init__(classifier, batch_size, **common)
        self.n_steps, self.baseline = n_steps, baseline

    def _heatmap(self, model, images, target):
        attribution = captum_attr.IntegratedGradients(model).attribute(
            images, baselines=self.baseline, target=target, n_steps=self.n_steps,
            internal_batch_size=self.batch_size)
        return _abs_channel_sum(attribution)


class GradientShapBaseline(HeatmapBaseline):
    """Gradient SHAP (captum ``GradientShap``) against ``n_baselines`` reference images: the
    black image and uniform noise in [-1, 1]; ``n_samples`` random points between
    a reference and the image per image, each with Gaussian noise of ``stdevs``. H is the
    absolute value summed over channels. Seeded like ``RandomBaseline``."""

    def __init__(self, classifier: nn.Module, n_baselines: int = 8, n_samples: int = 20,
                 stdevs: float = 0.1, seed: int = 0, batch_size: int = 32, **common):
        super().__init__(classifier, batch_size, **common)
        if n_baselines < 1:
            raise DXAIError(f"Gradient SHAP needs at least 1 reference image, not {n_baselines}")
        self.n_baselines, self.n_samples, self.stdevs = n_baselines, n_samples, stdevs
        self._generator = torch.Generator().manual_seed(seed)

    @property
    def _chunk_images(self) -> int:
        return max(1, self.batch_size // self.n_samples)  # captum evaluates n_samples per image at once

    def _heatmap(self, model, images, target):
        noise = torch.rand((self.n_baselines - 1, *images.shape[1:]), generator=self._generator) * 2 - 1
        references = torch.cat([torch.full_like(noise[:1], BLACK), noise]).to(images)
        seed = int(torch.randint(2**31, (1,), generator=self._generator))
        with _seeded(seed, images.device):
            attribution = captum_attr.GradientShap(model).attribute(
                images, baselines=references, target=target, n_samples=self.n_samples, stdevs=self.stdevs)
        return _abs_channel_sum(attribution)


class _ResidualForLRP(nn.Module):
    """A torchvision residual block as captum's LRP needs it: one ReLU module per use and the
    skip connection as captum's ``Addition_Module``, so the sum gets the epsilon rule
    (relevance split in proportion to the two summands) instead of being copied to both."""

    def __init__(self, block: BasicBlock | Bottleneck):
        super().__init__()
        layers = [block.conv1, block.bn1, nn.ReLU(), block.conv2, block.bn2]
        if isinstance(block, Bottleneck):
            layers += [nn.ReLU(), block.conv3, block.bn3]
        self.residual = nn.Sequential(*layers)
        self.downsample = block.downsample
        self.add = Addition_Module()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.add(self.residual(x), identity))


class LRPBaseline(HeatmapBaseline):
    """Layer-wise relevance propagation (captum ``LRP``) with captum's default rules: the
    epsilon rule with epsilon = 1e-9 (in effect LRP-0) on every layer, relevance passed
    unchanged through ReLUs. ResNet residual blocks are rewritten as ``_ResidualForLRP`` and
    ``nn.Flatten`` gets the epsilon rule (a reshape); any other module captum has no rule for
    is an error. For these ReLU networks LRP-0 equals Input x Gradient (Ancona et al., 2018),
    which the tests check. H is the absolute relevance summed over channels."""

    def _prepare(self, model):
        for name, module in list(model.named_modules()):
            if isinstance(module, (BasicBlock, Bottleneck)):
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, _ResidualForLRP(module))
        supported = (*SUPPORTED_LAYERS_WITH_RULES, *SUPPORTED_NON_LINEAR_LAYERS, nn.Flatten)
        for name, module in model.named_modules():
            if not any(module.children()) and type(module) not in supported:
                raise DXAIError(f"captum's LRP has no rule for the classifier's module {name!r} "
                                f"({type(module).__name__}); choose another baseline")
        return model

    def _heatmap(self, model, images, target):
        for module in model.modules():  # captum deletes every rule after each call
            if isinstance(module, nn.Flatten):
                module.rule = EpsilonRule()
        return _abs_channel_sum(captum_attr.LRP(model).attribute(images, target=target))


class InternalInfluenceBaseline(LayerBaseline):
    """Internal Influence (captum ``InternalInfluence``, a layer method): gradients of the class
    score with respect to the layer's units, integrated along the straight path from a constant
    ``baseline`` image (black by default, as for Integrated Gradients) in ``n_steps`` steps;
    H is the absolute value summed over the layer's channels, upsampled bilinearly."""

    def __init__(self, classifier: nn.Module, layer: nn.Module | str | None = None, n_steps: int = 50,
                 baseline: float = BLACK, batch_size: int = 32, **common):
        super().__init__(classifier, layer, batch_size, **common)
        self.n_steps, self.baseline = n_steps, baseline

    def _heatmap(self, model, images, target):
        method = captum_attr.InternalInfluence(model, self._layer(model, images))
        influence = method.attribute(images, baselines=self.baseline, target=target, n_steps=self.n_steps,
                                     internal_batch_size=self.batch_size)
        return _upsample(_abs_channel_sum(influence), images)


BASELINES = {
    "random": RandomBaseline,
    "grad_cam": GradCamBaseline,
    "guided_grad_cam": GuidedGradCamBaseline,
    "integrated_gradients": IntegratedGradientsBaseline,
    "gradient_shap": GradientShapBaseline,
    "lrp": LRPBaseline,
    "internal_influence": InternalInfluenceBaseline,
}


def make_baseline(name: str, classifier: nn.Module, **options) -> HeatmapBaseline:
    """The explainer ``name`` of ``BASELINES`` for ``classifier``; ``options`` go to its class."""
    if name not in BASELINES:
        raise DXAIError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    return BASELINES[name](classifier, **options)
