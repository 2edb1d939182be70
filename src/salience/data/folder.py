"""A folder of images, optionally one subfolder per class (``root/CLASS/*.jpg``)."""

from __future__ import annotations

from pathlib import Path

from ..errors import SalienceError
from ..images import IMAGE_SUFFIXES
from .sample import Dataset, Sample, read_image


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class ImageFolder(Dataset):
    """Images under ``root``. With class subfolders, label = index of the sorted folder name."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise SalienceError(f"image folder not found: {self.root}")
        subfolders = sorted(p for p in self.root.iterdir() if p.is_dir() and _images_in(p))
        self.classes = [p.name for p in subfolders]
        if subfolders:
            self.items = [(path, i) for i, folder in enumerate(subfolders) for path in _images_in(folder)]
        else:
            self.items = [(path, None) for path in _images_in(self.root)]
        if not self.items:
            raise SalienceError(f"no images in {self.root}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        path, label = self.items[i]
        name = self.classes[label] if label is not None else None
        return Sample(read_image(path), label, name, None, None, [], str(path.relative_to(self.root).with_suffix("")))
