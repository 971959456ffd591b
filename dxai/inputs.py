"""Reading a user's images for inference: files, folders and globs of any format and size.

Every image is converted to the model's channel count and size; a conversion worth knowing
(grey to RGB, dropped alpha, palette, resizing) comes back as a note, and an unreadable file
comes back as a failure with its reason instead of stopping the batch.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dxai.errors import DXAIError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}


@dataclass
class LoadedImage:
    path: Path
    image: torch.Tensor | None = None      # C x H x W in [0, 1], at the model's size
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Expand files, folders (recursively, image suffixes only) and glob patterns, in order."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            paths.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not matches:
                raise DXAIError(f"input {item} is neither a file, a folder nor a glob that matches files")
            paths += matches
    unique = list(dict.fromkeys(paths))
    if not unique:
        raise DXAIError(f"no image files found in {inputs}")
    return unique


def load_for_model(path: Path, channels: int, size: int) -> LoadedImage:
    """Read one image as the model wants it, noting conversions; never raises for a bad file."""
    result = LoadedImage(path)
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("P", "PA"):
                result.notes.append("palette image converted")
                image = image.convert("RGBA" if "transparency" in image.info or mode == "PA" else "RGB")
            if image.mode in ("RGBA", "LA"):
                result.notes.append("alpha channel dropped (composited on white)")
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, image.convert("RGBA"))
            target_mode = "L" if channels == 1 else "RGB"
            if image.mode != target_mode:
                if image.mode in ("L", "I", "I;16", "F", "1") and channels == 3:
                    result.notes.append("grey image replicated to RGB")
                elif channels == 1:
                    result.notes.append("colour image converted to grey")
                image = image.convert(target_mode)
            if image.size != (size, size):
                result.notes.append(f"resized from {image.size[0]}x{image.size[1]} to {size}x{size}")
                image = image.resize((size, size), Image.Resampling.BICUBIC)
            pixels = np.asarray(image, dtype=np.float32).reshape(size, size, channels) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        result.error = f"unreadable image ({type(error).__name__}: {error})"
        return result
    result.image = torch.from_numpy(pixels.transpose(2, 0, 1).copy())
    return result
