"""Class-per-folder image data sets: ``ROOT/train/<class>/*`` and ``ROOT/val/<class>/*``.

This is the layout of AFHQ and CelebA-HQ as StarGAN-v2 distributes them. Problems are found
when the data set is opened, reported once with their paths, and bad files are skipped, so
a long training run never dies on one corrupt JPEG.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from dxai.data.transforms import to_tensor
from dxai.errors import DXAIError
from dxai.images import IMAGE_SUFFIXES, ImageReadError, read_image

log = logging.getLogger(__name__)

LAYOUT = "ROOT/train/<class>/*.jpg|png|bmp|webp|... and ROOT/val/<class>/*"


class DataError(DXAIError):
    """Input data that cannot be used, with a message that says where and how to fix it."""


def _is_readable(path: Path) -> str | None:
    """None if PIL can decode the file, else the reason it cannot."""
    try:
        with Image.open(path) as image:
            image.verify()
        read_image(path, 1, 1)
    except ImageReadError as error:
        return str(error).removeprefix(f"{path}: ")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def list_classes(root: Path, split: str) -> list[str]:
    split_dir = root / split
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist; expected the layout {LAYOUT} "
                        "(pass --data-root or set DXAI_DATA)")
    if not split_dir.is_dir():
        raise DataError(f"split folder {split_dir} is missing; expected the layout {LAYOUT}")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{split_dir} holds no class folders; expected the layout {LAYOUT}")
    return classes


class FolderDataset(Dataset):
    """Images of one split, labelled by their class folder.

    ``class_names`` fixes the label order (that of the training split); a class folder
    this split has but the list lacks is an error. ``transform`` is an albumentations
    pipeline that ends with normalisation; images are read with
    ``dxai.images.read_image`` at ``img_size``, as inference reads them.
    """

    def __init__(self, root: str | Path, split: str, channels: int = 3, img_size: int = 256, transform=None,
                 class_names: list[str] | None = None, check_files: bool = True):
        self.root, self.split, self.channels, self.transform = Path(root), split, channels, transform
        self.img_size = img_size
        found = list_classes(self.root, split)
        self.class_names = list(class_names) if class_names is not None else found
        unknown = sorted(set(found) - set(self.class_names))
        if unknown:
            raise DataError(f"{self.root / split} has class folders {unknown} that the training split "
                            f"lacks (training classes: {self.class_names}); rename or remove them")
        self.samples: list[tuple[Path, int]] = []
        empty, skipped = [], []
        for label, name in enumerate(self.class_names):
            folder = self.root / split / name
            files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
                if folder.is_dir() else []
            if not files:
                empty.append(str(folder))
            for path in files:
                reason = _is_readable(path) if check_files else None
                if reason:
                    skipped.append(f"{path} ({reason})")
                else:
                    self.samples.append((path, label))
        if empty:
            log.warning("%d class folder(s) of %s hold no images: %s", len(empty), split, ", ".join(empty))
        if skipped:
            log.warning("skipping %d unreadable image(s) in %s: %s", len(skipped), split, "; ".join(skipped))
        if not self.samples:
            raise DataError(f"no readable images under {self.root / split}; expected the layout {LAYOUT}")
        self.empty_classes, self.skipped_files = empty, skipped

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        path, label = self.samples[index]
        image = read_image(path, self.channels, self.img_size)
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return {"image": to_tensor(image), "label": label}
