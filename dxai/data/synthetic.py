"""Synthetic data sets with ground truth: every image is ``background + class_part``.

The background is drawn from one distribution for all classes (smooth fields, texture and
clutter lines); only the class part depends on the label. A sample is generated on the fly
and is a pure function of ``(seed, index)``, so the data set needs no files and any split of
any size is reproducible.

Families (mirroring the DXAI paper's cases):
- ``shapes``: class k adds its own kind of shape (square, disk, triangle, cross, ring, ...)
  at a random place, size and intensity.
- ``colors``: every image holds blobs of a neutral colour; class k shifts their colour by
  an additive colour of its own (the paper's peppers case).
- ``noise``: class 0 is clean, class 1 carries additive white Gaussian noise (fig. 13).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from dxai.errors import DXAIError

FAMILIES = ("shapes", "colors", "noise")
SHAPES = ("square", "disk", "triangle", "cross", "ring", "diamond")
CLASS_COLOURS = np.array(
    [[0.35, -0.1, -0.1], [-0.1, 0.3, -0.1], [-0.1, -0.1, 0.35], [0.3, 0.3, -0.1], [-0.1, 0.3, 0.3]]
)
GREY_SHIFTS = np.linspace(-0.3, 0.4, len(CLASS_COLOURS))
BACKGROUND_MAX = 0.55
CACHE_BYTES = 1 << 30  # samples are memoised while the data set's three layers fit in this budget


def class_count_limit(family: str) -> int:
    return {"shapes": len(SHAPES), "colors": len(CLASS_COLOURS), "noise": 2}[family]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size) + 0.5) / size
    return np.meshgrid(coords, coords, indexing="ij")


def _smooth_field(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    field = np.zeros_like(yy)
    for _ in range(3):
        fy, fx = rng.uniform(0.5, 3.0, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        field += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
    return (field - field.min()) / (np.ptp(field) + 1e-8)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    coarse = max(2, size // 4)
    noise = rng.uniform(0, 1, size=(coarse, coarse))
    reps = -(-size // coarse)
    return np.kron(noise, np.ones((reps, reps)))[:size, :size]


def _clutter_lines(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    clutter = np.zeros_like(yy)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0.1, 0.9, size=2)
        angle = rng.uniform(0, np.pi)
        half_length = rng.uniform(0.15, 0.4)
        along = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
        across = -(yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
        clutter = np.maximum(clutter, ((np.abs(along) < half_length) & (np.abs(across) < 0.025)) * 1.0)
    return clutter


def _background(rng: np.random.Generator, size: int, channels: int) -> np.ndarray:
    yy, xx = _grid(size)
    layers = []
    for _ in range(channels):
        smooth = _smooth_field(rng, yy, xx)
        texture = _texture(rng, size)
        layers.append(0.6 * smooth + 0.4 * texture)
    base = np.stack(layers)
    if channels == 3:
        grey = base.mean(0, keepdims=True)
        base = 0.5 * base + 0.5 * grey
    base = base * rng.uniform(0.5, 0.8) + 0.4 * _clutter_lines(rng, yy, xx)[None]
    return np.clip(base, 0, 1) * BACKGROUND_MAX


def shape_mask(kind: str, size: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """Binary mask of one shape centred at (cy, cx) with half-size ``radius`` (unit coordinates)."""
    yy, xx = _grid(size)
    dy, dx = yy - cy, xx - cx
    if kind == "square":
        mask = (np.abs(dy) < radius) & (np.abs(dx) < radius)
    elif kind == "disk":
        mask = dy**2 + dx**2 < radius**2
    elif kind == "triangle":
        mask = (dy < radius) & (dy > -radius) & (np.abs(dx) < (dy + radius) / 2)
    elif kind == "cross":
        arm = radius / 3
        mask = ((np.abs(dy) < radius) & (np.abs(dx) < arm)) | ((np.abs(dx) < radius) & (np.abs(dy) < arm))
    elif kind == "ring":
        r2 = dy**2 + dx**2
        mask = (r2 < radius**2) & (r2 > (0.55 * radius) ** 2)
    elif kind == "diamond":
        mask = np.abs(dy) + np.abs(dx) < radius
    else:
        raise ValueError(f"unknown shape {kind!r}; choose one of {SHAPES}")
    return mask.astype(np.float64)


def _shapes_part(rng, label, size, channels):
    radius = rng.uniform(0.14, 0.26)
    cy, cx = rng.uniform(radius, 1 - radius, size=2)
    intensity = rng.uniform(0.3, 0.45)
    mask = shape_mask(SHAPES[label], size, cy, cx, radius)
    return np.repeat(mask[None] * intensity, channels, axis=0)


def _colors_part(rng, label, background, size, channels):
    yy, xx = _grid(size)
    blobs = np.zeros((size, size))
    for _ in range(rng.integers(1, 3)):
        radius = rng.uniform(0.12, 0.22)
        cy, cx = rng.uniform(radius, 1 - radius, size=2)
        blobs = np.maximum(blobs, ((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2) * 1.0)
    # The neutral blobs belong to the background: every class has them.
    background = background * (1 - blobs) + 0.5 * blobs
    shift = CLASS_COLOURS[label] if channels == 3 else GREY_SHIFTS[label : label + 1]
    return background, blobs[None] * shift[:, None, None] * rng.uniform(0.8, 1.0)


def _noise_part(rng, label, background):
    if label == 0:
        return np.zeros_like(background)
    noisy = np.clip(background + rng.normal(0, rng.uniform(0.06, 0.12), size=background.shape), 0, 1)
    return noisy - background


class SyntheticDataset(Dataset):
    """Deterministic ``image = background + class_part`` samples with both layers returned.

    Each item is a dict with ``image`` (C x H x W in [0, 1] before ``transform``), ``label``,
    ``background`` and ``class_part``. ``transform`` is an affine normalisation applied to the
    image and background, and to the class part without the offset, so that the identity
    ``image == background + class_part`` holds in the model's domain too. Generated items are
    kept in memory when the whole set fits in ``CACHE_BYTES`` (every epoch after the first is
    then free of generation cost).
    """

    def __init__(self, family="shapes", num_classes=3, size=2000, img_size=32, channels=3, seed=0,
                 normalization=None):
        if family not in FAMILIES:
            raise DXAIError(f"unknown synthetic family {family!r}; choose one of {FAMILIES}")
        if not 2 <= num_classes <= class_count_limit(family):
            raise DXAIError(f"the {family} family supports 2 to {class_count_limit(family)} classes, "
                             f"not {num_classes}")
        if not 16 <= img_size <= 256:
            raise DXAIError(f"synthetic images are 16 to 256 px, not {img_size}")
        if channels not in (1, 3):
            raise DXAIError(f"synthetic images have 1 or 3 channels, not {channels}")
        self.family, self.num_classes, self.size = family, num_classes, size
        self.img_size, self.channels, self.seed = img_size, channels, seed
        self.normalization = normalization
        self.class_names = self._class_names()
        self._cache: dict[int, dict] | None = {} if size * 3 * channels * img_size**2 * 4 <= CACHE_BYTES else None

    def _class_names(self) -> list[str]:
        if self.family == "shapes":
            return list(SHAPES[: self.num_classes])
        if self.family == "colors":
            return [f"colour{k}" for k in range(self.num_classes)]
        return ["clean", "noisy"]

    def __len__(self) -> int:
        return self.size

    def generate(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Return (background, class_part, label) in [0, 1] units, as float64 C x H x W arrays."""
        if not 0 <= index < self.size:
            raise IndexError(index)
        rng = np.random.default_rng((self.seed, index))
        label = int(rng.integers(self.num_classes))
        background = _background(rng, self.img_size, self.channels)
        if self.family == "shapes":
            class_part = _shapes_part(rng, label, self.img_size, self.channels)
        elif self.family == "colors":
            background, class_part = _colors_part(rng, label, background, self.img_size, self.channels)
        else:
            class_part = _noise_part(rng, label, background)
        return background, class_part, label

    def __getitem__(self, index: int) -> dict:
        if self._cache is None:
            return self._make_item(index)
        if index not in self._cache:
            self._cache[index] = self._make_item(index)
        return dict(self._cache[index])

    def _make_item(self, index: int) -> dict:
        background, class_part, label = self.generate(index)
        image = torch.from_numpy(background + class_part).float()
        background = torch.from_numpy(background).float()
        class_part = torch.from_numpy(class_part).float()
        if self.normalization is not None:
            image = self.normalization.normalize(image)
            background = self.normalization.normalize(background)
            class_part = self.normalization.scale(class_part)
        return {"image": image, "label": label, "background": background, "class_part": class_part}
