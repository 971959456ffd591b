"""Reading images from files, the one way training and inference both use.

``read_image`` turns any file PIL decodes into an H x W x C float array in [0, 1] at the
model's size: palette images are expanded, alpha is composited on white, 16-bit and float
images are scaled by their own range (not saturated at 255), CMYK and grey are converted to
the model's channel count, and the image is resized bicubically. Each conversion worth knowing
comes back as a note; a file that cannot be decoded raises ``ImageReadError`` with the reason.
"""

from __future__ import annotations

import glob
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dxai.errors import DXAIError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
DECODER_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
                  Image.DecompressionBombWarning)
WIDE_GREY_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0}


class ImageReadError(DXAIError):
    """A file that is not a decodable image."""


def _pixels(image: Image.Image, channels: int, notes: list[str]) -> np.ndarray:
    """H x W x channels float32 in [0, 1] of a loaded PIL image of any mode."""
    mode = image.mode
    if mode in ("P", "PA"):
        notes.append("palette image converted")
        image = image.convert("RGBA" if "transparency" in image.info or mode == "PA" else "RGB")
    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        notes.append("alpha channel dropped (composited on white)")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    if image.mode in WIDE_GREY_MODES or image.mode == "F":
        scale = WIDE_GREY_MODES.get(image.mode, 1.0)
        notes.append(f"{'16-bit' if scale > 1 else 'float'} grey image scaled to [0, 1]")
        grey = np.clip(np.asarray(image, dtype=np.float32) / scale, 0.0, 1.0)[..., None]
    else:
        if image.mode not in ("L", "RGB"):
            notes.append(f"{image.mode} image converted to {'grey' if channels == 1 else 'RGB'}")
            image = image.convert("L" if channels == 1 else "RGB")
        array = np.asarray(image, dtype=np.float32) / 255.0
        grey = array[..., None] if array.ndim == 2 else None
        if grey is None:
            if channels == 3:
                return array
            notes.append("colour image converted to grey")
            return np.asarray(image.convert("L"), dtype=np.float32)[..., None] / 255.0
    if channels == 3:
        notes.append("grey image replicated to RGB")
        return np.repeat(grey, 3, axis=2)
    return grey


def _resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """Bicubic resize of a float image, channel by channel (PIL's 'F' mode keeps the precision)."""
    planes = [np.asarray(Image.fromarray(pixels[..., c]).resize((size, size), Image.Resampling.BICUBIC))
              for c in range(pixels.shape[2])]
    return np.clip(np.stack(planes, axis=2), 0.0, 1.0).astype(np.float32)


def read_image(path: str | Path, channels: int, size: int, notes: list[str] | None = None) -> np.ndarray:
    """The image at ``path`` as H x W x ``channels`` float32 in [0, 1], ``size`` x ``size``."""
    notes = [] if notes is None else notes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                pixels = _pixels(image, channels, notes)
    except DECODER_ERRORS as error:
        raise ImageReadError(f"{path}: unreadable image ({type(error).__name__}: {error})") from None
    if pixels.shape[:2] != (size, size):
        notes.append(f"resized from {pixels.shape[1]}x{pixels.shape[0]} to {size}x{size}")
        pixels = _resize(pixels, size)
    return pixels


@dataclass
class LoadedImage:
    path: Path
    image: torch.Tensor | None = None      # C x H x W in [0, 1], at the model's size
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def load_for_model(path: Path, channels: int, size: int) -> LoadedImage:
    """Read one image as the model wants it, noting conversions; never raises for a bad file."""
    result = LoadedImage(path)
    try:
        pixels = read_image(path, channels, size, result.notes)
    except ImageReadError as error:
        result.error = str(error).removeprefix(f"{path}: ")
        return result
    result.image = torch.from_numpy(pixels.transpose(2, 0, 1).copy())
    return result


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Expand files, folders (recursively, image suffixes only) and glob patterns, in order.

    Dangling or looping symbolic links are kept, so that reading them lists them as failed."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if is_image_file(p) and (p.is_file() or p.is_symlink()))
        elif path.is_file() or path.is_symlink():
            paths.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True)
                             if Path(p).is_file() or Path(p).is_symlink())
            if not matches:
                raise DXAIError(f"input {item} is neither a file, a folder nor a glob that matches files")
            paths += matches
    unique = list(dict.fromkeys(paths))
    if not unique:
        raise DXAIError(f"no image files found in {inputs}")
    return unique
