"""The Explainer: a bundle in, every explanation of a batch out, in one pass.

    explainer = Explainer.from_bundle("runs/synthetic/default", device="cuda")
    explanation = explainer.explain(images)   # images: B x C x H x W in [0, 1], the model's size
    distinct = explainer.attribute(images)    # psi_distinct alone

One classifier pass (prediction), one generator pass (distinct and agnostic parts, with the
fixed style of the explained class, so the same image always gives the same parts) and one
mask-predictor pass (the cartoon explanation), optionally refined by K CartoonX steps.
Needs only ``nets/``, ``wavelets.py``, ``explain/`` and the bundle: no Lightning, no
albumentations, no training code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dxai.bundle import BundleError, find_bundle, load_weights, read_manifest
from dxai.errors import DXAIError
from dxai.explain.cartoonx import CartoonX
from dxai.explain.cpu_split import split_branches_over_cores, split_over_cores
from dxai.explain.inputs import Target, check_images, resolve_target
from dxai.explanation import Explanation
from dxai.layout import channels_last
from dxai.nets.classifier import build_classifier
from dxai.nets.generator import Generator
from dxai.nets.mask_predictor import MaskPredictor
from dxai.normalization import Normalization
from dxai.wavelets import flatten_mask


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device that exists on this machine, or a ``DXAIError`` saying which do."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as error:
        raise DXAIError(f"device {str(device)!r} is not a torch device ({str(error).splitlines()[0]}); "
                        f"use one of {available_devices()}") from None
    if device.type == "cpu" or device.type == "meta":
        return device
    backend = getattr(torch, device.type, None)
    if device.type == "mps":
        backend = getattr(torch.backends, "mps", None)
    available = bool(backend is not None and getattr(backend, "is_available", lambda: False)())
    if not available:
        raise DXAIError(f"device {str(device)!r}: this machine has no {device.type} device (or torch was built "
                        f"without it); use one of {available_devices()}")
    count = getattr(backend, "device_count", lambda: 1)()
    if device.index is not None and device.index >= count:
        raise DXAIError(f"device {str(device)!r}: this machine has {count} {device.type} device(s), "
                        f"{device.type}:0 to {device.type}:{count - 1}; use one of {available_devices()}")
    return device


def available_devices() -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


class Explainer:
    """Distinct and agnostic parts and cartoon explanations for batches of images."""

    def __init__(self, classifier: nn.Module, generator: Generator, styles: torch.Tensor, predictor: MaskPredictor,
                 normalization: Normalization, class_names: list[str], img_size: int, cartoonx: dict,
                 device: str | torch.device = "cpu"):
        self.device = check_device(device)
        self.classifier = classifier.to(self.device)
        self.generator = generator.to(self.device)
        self.styles = styles.to(self.device)
        self.predictor = predictor.to(self.device)
        self.normalization, self.class_names, self.img_size = normalization, class_names, img_size
        self.channels = len(normalization.mean)
        self.cartoonx = CartoonX(self.classifier, normalization=normalization, class_names=class_names, **cartoonx)

    @classmethod
    def from_bundle(cls, path: str | Path, device: str | torch.device = "cpu") -> Explainer:
        check_device(device)
        bundle = find_bundle(path)
        manifest = read_manifest(bundle)
        try:
            return cls._from_manifest(bundle, manifest, device)
        except DXAIError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as error:
            raise BundleError(f"{bundle / 'model.json'} has settings this dxai cannot build a model from "
                              f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else error!r}); "
                              "export the run again with this version of dxai") from None

    @classmethod
    def _from_manifest(cls, bundle: Path, manifest: dict, device: str | torch.device) -> Explainer:
        num_classes, channels, size = len(manifest["class_names"]), manifest["img_channels"], manifest["img_size"]
        classifier = load_weights(bundle, manifest, "classifier",
                                  build_classifier(manifest["classifier"]["arch"], num_classes, channels, size))
        generator = load_weights(bundle, manifest, "generator", Generator(**manifest["generator"]))
        predictor = load_weights(bundle, manifest, "mask_predictor", MaskPredictor(**manifest["mask_predictor"]))
        styles = torch.tensor(manifest["styles"], dtype=torch.float32)
        if styles.shape[0] != num_classes:
            raise BundleError(f"{bundle / 'model.json'} has {styles.shape[0]} styles for {num_classes} classes; "
                              "export the run again")
        normalization = Normalization(tuple(manifest["normalization"]["mean"]), tuple(manifest["normalization"]["std"]))
        return cls(classifier, generator, styles, predictor, normalization, manifest["class_names"], size,
                   manifest["cartoonx"], device)

    def branches(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The generator's branches (B, n, C, H, W) of normalised images under their targets' styles."""
        return split_branches_over_cores(self.generator, x, self.styles[target])

    def predicted_masks(self, images: torch.Tensor, target: torch.Tensor):
        """The mask predictor's one-pass wavelet masks (bands) of images in [0, 1]."""
        return split_over_cores(self.predictor, images, target)

    def attribute(self, images: torch.Tensor, target: Target = None) -> torch.Tensor:
        """psi_distinct (B, C, H, W, in the classifier's input domain) of ``images`` in [0, 1]."""
        return self.explain(images, target).distinct

    @torch.no_grad()
    def explain(self, images: torch.Tensor, target: Target = None, refine_steps: int = 0) -> Explanation:
        """Explain ``images`` (B x C x H x W in [0, 1], the model's size).

        Args:
            images: a float tensor or numpy array in [0, 1].
            target: None (the predicted class), a class index or name, or one per image.
            refine_steps: CartoonX steps from the predicted mask, or from the start that
                ``CartoonX.select_start`` prefers to it per image, under the bundle's refinement
                schedule (with its all-ones track, where it has one); 0: the one-pass mask.

        Returns:
            An ``Explanation``: prediction, probabilities, distinct and agnostic parts, the
            branches, the cartoon image and its wavelet mask.
        """
        if refine_steps < 0:
            raise DXAIError(f"refine_steps must be 0 or more, not {refine_steps}")
        images = check_images(images, "the explainer", self.channels, self.img_size)
        images = images.to(self.device, torch.float32)
        x = self.normalization.normalize(images)
        probabilities = self.classifier(channels_last(x)).softmax(1)
        predicted = probabilities.argmax(1)
        target = resolve_target(target, probabilities, self.class_names)
        branches = self.branches(x, target)
        masks = self.predicted_masks(channels_last(images), target)
        if refine_steps > 0:
            with torch.enable_grad():
                start, _ = self.cartoonx.select_start(images, target, masks)  # the predicted mask or a safer start
                masks = self.cartoonx.optimize(images, target, init=start, steps=refine_steps).masks
        representation = self.cartoonx.representation(tuple(images.shape[-2:])).to(self.device)
        cartoon = self.cartoonx.visualize(images, masks, representation)
        return Explanation(images=x, target=target, predicted=predicted, probabilities=probabilities,
                           distinct=branches[:, 0], agnostic=branches[:, 1:].sum(1), branches=branches,
                           cartoon=cartoon, mask=flatten_mask(masks))
