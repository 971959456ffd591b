"""The one input check and the one target resolver that every dxai explainer uses.

Every explainer takes images as a float B x C x H x W batch in [0, 1] (a torch tensor or a
numpy array) and a ``target``: None (the classifier's predicted class), a class index, a class
name, or one of those per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dxai.errors import DXAIError

Target = int | str | Sequence[int] | Sequence[str] | torch.Tensor | None


class InputError(DXAIError):
    """Images or targets an explainer cannot take, with what it takes instead."""


def check_images(images, name: str, channels: int | None = None, size: int | None = None) -> torch.Tensor:
    """``images`` as a float tensor B x C x H x W in [0, 1], or an ``InputError`` saying what is wrong."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise InputError(f"{name} takes a float tensor (or numpy array) B x C x H x W in [0, 1], "
                         f"not a {type(images).__name__}")
    if images.dim() == 3:
        raise InputError(f"{name} takes a batch B x C x H x W; for one image of shape {tuple(images.shape)} "
                         "pass images[None]")
    if images.dim() != 4:
        raise InputError(f"{name} takes a batch B x C x H x W, not shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise InputError(f"{name} takes float images in [0, 1], not {images.dtype} (divide 8-bit pixels by 255)")
    if images.shape[0] == 0:
        raise InputError(f"{name} got an empty batch (0 images)")
    if channels is not None and images.shape[1] != channels:
        raise InputError(f"the classifier takes {channels}-channel images, but the images have "
                         f"{images.shape[1]} channels")
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        raise InputError(f"{name} takes {size} x {size} images, not {images.shape[-2]} x {images.shape[-1]}; "
                         "resize them first (infer.py does)")
    finite = torch.isfinite(images)
    if not bool(finite.all()):
        bad = sorted({int(i) for i in torch.nonzero(~finite.flatten(1).all(1)).flatten()})
        raise InputError(f"{name} got NaN or infinite pixels in image(s) {bad[:10]}; replace them first")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise InputError(f"{name} takes images in [0, 1], but these range from {low:.3g} to {high:.3g}; "
                         "pass un-normalised images (the explainer applies the model's normalisation)")
    return images


def _class_index(value, class_names: Sequence[str] | None) -> int:
    if isinstance(value, str):
        if class_names is None or value not in class_names:
            known = f"one of {list(class_names)}" if class_names is not None else "an index (no class names known)"
            raise InputError(f"target {value!r} is not a class of this model; give {known}")
        return list(class_names).index(value)
    return value


def class_indices(target: Target, class_names: Sequence[str] | None = None) -> Target:
    """``target`` with class names replaced by their indices (other values unchanged)."""
    if isinstance(target, str):
        return _class_index(target, class_names)
    if isinstance(target, (list, tuple)) and any(isinstance(value, str) for value in target):
        return [_class_index(value, class_names) for value in target]
    return target


def resolve_target(target: Target, probabilities: torch.Tensor,
                   class_names: Sequence[str] | None = None) -> torch.Tensor:
    """The class to explain per image (B, long): the predicted ones for None; one int or name
    applies to every image."""
    batch_size, num_classes = probabilities.shape
    if target is None:
        return probabilities.argmax(1)
    target = torch.as_tensor(class_indices(target, class_names), device=probabilities.device)
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool or target.dim() > 1:
        raise InputError(f"target must be a class index or name, or one per image, not a {target.dtype} tensor "
                         f"of shape {tuple(target.shape)}")
    target = target.long().reshape(-1)
    if target.numel() == 1:
        target = target.expand(batch_size).clone()
    if target.numel() != batch_size:
        raise InputError(f"got {target.numel()} targets for {batch_size} images; give one per image or one class")
    out_of_range = (target < 0) | (target >= num_classes)
    if bool(out_of_range.any()):
        raise InputError(f"target class {int(target[out_of_range][0])} is out of range: the classifier has "
                         f"{num_classes} classes (0 to {num_classes - 1})")
    return target
