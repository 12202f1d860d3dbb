"""Image-folder data sets with an optional ``labels.csv`` (``file,label,...``)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import torch
from PIL import Image

from edgecloud.errors import DatasetError
from edgecloud.models.preprocessing import Preprocessing

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
UNLABELLED = -1
Sample = Tuple[torch.Tensor, int, str]


def _find_images(root: Path) -> List[Path]:
    if not root.is_dir():
        raise DatasetError(f"data directory not found: {root}")
    folder = root / "images" if (root / "images").is_dir() else root
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return files


def read_labels(path: Path) -> Dict[str, int]:
    """``file -> label`` from a CSV with at least the columns ``file`` and ``label``."""
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"file", "label"} <= set(reader.fieldnames):
                raise DatasetError(f"{path} must have the columns 'file' and 'label'")
            return {row["file"]: int(row["label"]) for row in reader}
    except (OSError, ValueError, csv.Error) as exc:
        raise DatasetError(f"cannot read labels file {path}: {exc}") from exc


class ImageFolder(torch.utils.data.Dataset):
    """Sorted images of ``root`` (or ``root/images``), preprocessed for a model.

    Labels come from ``root/labels.csv`` when it exists; images without a label get -1.
    """

    def __init__(
        self,
        root: Union[str, Path],
        preprocessing: Preprocessing,
        limit: Optional[int] = None,
        offset: int = 0,
    ) -> None:
        self.root = Path(root)
        self.preprocessing = preprocessing
        files = _find_images(self.root)
        self.files: List[Path] = files[offset : offset + limit if limit is not None else None]
        if not self.files:
            raise DatasetError(f"no images left in {self.root} after offset={offset} limit={limit}")
        labels_file = self.root / "labels.csv"
        table = read_labels(labels_file) if labels_file.is_file() else {}
        self.labels: List[int] = [table.get(p.name, UNLABELLED) for p in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def load_image(self, index: int) -> Image.Image:
        path = self.files[index]
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except OSError as exc:
            raise DatasetError(f"cannot decode image {path}: {exc}") from exc

    def __getitem__(self, index: int) -> Sample:
        return (
            self.preprocessing(self.load_image(index)),
            self.labels[index],
            self.files[index].name,
        )


Batch = Tuple[torch.Tensor, torch.Tensor, List[str]]


def _collate(samples: List[Sample]) -> Batch:
    images, labels, names = zip(*samples)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), list(names)


def make_loader(dataset: ImageFolder, batch_size: int = 32, workers: int = 2) -> Iterator[Batch]:
    """Batches of ``(images, labels, names)`` in file order; decoding in worker processes."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        persistent_workers=False,
    )
