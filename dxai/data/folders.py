"""Class-per-folder image data sets: ``ROOT/train/<class>/*`` and ``ROOT/val/<class>/*``.

This is the layout of AFHQ and CelebA-HQ as StarGAN-v2 distributes them. Problems are found
when the data set is opened, reported once with their paths, and bad files are skipped, so
a long training run never dies on one corrupt JPEG; a class folder left without a readable
image is an error that names it. The scan's verdicts are cached (``dxai.data.scan_cache``), so
only new or changed files are decoded again. A file that breaks or disappears during training
is replaced by the next readable sample, with a warning; when several in a row fail, the data
is gone and a ``DataError`` says so (rerunning resumes from the stage's last.ckpt).
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from dxai.data.scan_cache import ScanCache
from dxai.data.transforms import to_tensor
from dxai.errors import DXAIError
from dxai.images import DECODER_ERRORS, IMAGE_SUFFIXES, ImageReadError, read_image

log = logging.getLogger(__name__)

LAYOUT = "ROOT/train/<class>/*.jpg|png|bmp|webp|... and ROOT/val/<class>/*"
SUBSTITUTE_TRIES = 8  # unreadable samples in a row that __getitem__ replaces before it gives up


class DataError(DXAIError):
    """Input data that cannot be used, with a message that says where and how to fix it.

    Raised in a DataLoader worker, it comes back to the main process with the worker's traceback
    in its message; that is cut back to the message itself."""

    def __init__(self, message: str = ""):
        marker = f"{type(self).__name__}: "
        if message.startswith("Caught ") and "Original Traceback" in message and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


def _is_readable(path: Path) -> str | None:
    """None if PIL can decode the file, else the reason it cannot."""
    try:
        with Image.open(path) as image:
            image.verify()
        read_image(path, 1, 1)
    except ImageReadError as error:
        return str(error).removeprefix(f"{path}: ")
    except DECODER_ERRORS as error:
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
        cache = ScanCache(self.root, split) if check_files else None
        unusable, skipped = [], []
        for label, name in enumerate(self.class_names):
            folder = self.root / split / name
            files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
                if folder.is_dir() else []
            readable = 0
            for path in files:
                reason = cache.verdict(path, _is_readable) if cache is not None else None
                if reason:
                    skipped.append(f"{path} ({reason})")
                else:
                    self.samples.append((path, label))
                    readable += 1
            if not readable:
                unusable.append(f"{folder} ({'no image files' if not files else f'all {len(files)} unreadable'})")
        if cache is not None:
            cache.save()  # also when the folders below are refused: a rerun after the fix decodes only what changed
        if skipped:
            log.warning("skipping %d unreadable image(s) in %s: %s", len(skipped), split, "; ".join(skipped))
        if unusable:
            raise DataError(f"{len(unusable)} class folder(s) of {self.root / split} hold no readable image: "
                            f"{', '.join(unusable)}; add images (jpg, png, bmp, webp, ...) or remove the folder "
                            f"(expected the layout {LAYOUT})")
        self.files_verified = cache.verified if cache is not None else 0
        self.skipped_files = skipped
        self._warned: set[Path] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        """The sample at ``index``; if its file cannot be read any more (deleted, truncated or
        replaced since the data set opened), the next readable sample instead, with a warning
        once per file and process. A run of unreadable files raises ``DataError``."""
        failed = []
        for offset in range(min(SUBSTITUTE_TRIES, len(self.samples))):
            path, label = self.samples[(index + offset) % len(self.samples)]
            try:
                image = read_image(path, self.channels, self.img_size)
            except ImageReadError as error:
                failed.append(str(error))
                if path not in self._warned:
                    self._warned.add(path)
                    log.warning("%s; using the next image of %s instead (fix or remove the file)", error,
                                self.root / self.split)
                continue
            if self.transform is not None:
                image = self.transform(image=image)["image"]
            return {"image": to_tensor(image), "label": label}
        raise DataError(f"{len(failed)} images in a row of {self.root / self.split} cannot be read any more "
                        f"({'; '.join(failed)}): the data changed or its storage is gone since the data set "
                        "opened. Fix the data and rerun the same command: the stage resumes from its last.ckpt")
