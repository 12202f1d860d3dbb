"""Image-folder data sets with an optional ``labels.csv`` (``file,label,...``)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
from PIL import Image

from edgecloud.errors import DatasetError
from edgecloud.models.preprocessing import Preprocessing

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
UNLABELLED = -1
ON_BAD_IMAGE = ("skip", "stop")
#: (preprocessed image or None if unreadable, label, file name, error message or "")
Sample = Tuple[Optional[torch.Tensor], int, str, str]
log = logging.getLogger(__name__)


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
        #: unreadable images seen by a loader with ``on_bad_image="skip"``: name -> error
        self.skipped: Dict[str, str] = {}

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
        """Never raises for an unreadable image (it may run in a worker process): the error
        travels with the sample and the loader decides (see :func:`make_loader`)."""
        name, label = self.files[index].name, self.labels[index]
        try:
            return self.preprocessing(self.load_image(index)), label, name, ""
        except DatasetError as exc:
            return None, label, name, str(exc)


Batch = Tuple[torch.Tensor, torch.Tensor, List[str]]
_RawBatch = Tuple[Optional[torch.Tensor], torch.Tensor, List[str], List[Tuple[str, str]]]


def _collate(samples: List[Sample]) -> _RawBatch:
    good = [s for s in samples if s[0] is not None]
    failed = [(name, error) for image, _label, name, error in samples if image is None]
    images = torch.stack([s[0] for s in good]) if good else None
    labels = torch.tensor([s[1] for s in good], dtype=torch.long)
    return images, labels, [s[2] for s in good], failed


class ImageLoader:
    """Batches ``(images, labels, names)`` in file order, decoded in worker processes.

    An unreadable image is skipped with a warning and recorded in ``skipped`` (and in the
    ImageFolder's ``skipped``) with ``on_bad_image="skip"``, or stops the run with a
    :class:`DatasetError` naming the file (``"stop"``). ``dataset`` is an ImageFolder or a
    ``torch.utils.data.Subset`` of one.
    """

    def __init__(self, dataset: Any, batch_size: int, workers: int, on_bad_image: str) -> None:
        if on_bad_image not in ON_BAD_IMAGE:
            raise DatasetError(f"on_bad_image must be one of {ON_BAD_IMAGE}, not {on_bad_image!r}")
        self.on_bad_image = on_bad_image
        self.skipped: Dict[str, str] = getattr(getattr(dataset, "dataset", dataset), "skipped", {})
        self._loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=_collate,
            persistent_workers=False,
        )

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[Batch]:
        for images, labels, names, failed in self._loader:
            for name, error in failed:
                if self.on_bad_image == "stop":
                    raise DatasetError(f"{error} (use --on-bad-image skip to skip such images)")
                if name not in self.skipped:
                    log.warning("skipping unreadable image: %s", error)
                    self.skipped[name] = error
            if images is not None:
                yield images, labels, names


def make_loader(
    dataset: Any, batch_size: int = 32, workers: int = 2, on_bad_image: str = "stop"
) -> ImageLoader:
    """Batches of ``(images, labels, names)`` in file order; decoding in worker processes."""
    return ImageLoader(dataset, batch_size, workers, on_bad_image)
