"""Frame sources for the edge runtime: an image folder, one image, a video file or a camera."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

from PIL import Image

from edgecloud.errors import BackendUnavailableError, DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"}

Frame = Tuple[str, Image.Image]
log = logging.getLogger(__name__)


def iter_frames(
    source: Union[str, Path, int],
    limit: Optional[int] = None,
    skipped: Optional[List[str]] = None,
) -> Iterator[Frame]:
    """Yield ``(name, RGB image)``: folder files in sorted order, video frames as
    ``video.mp4#000012``, camera frames as ``camera0#000012``.

    An unreadable image of a folder raises :class:`DatasetError`, or, if ``skipped`` is a
    list, is logged, appended to it and skipped.
    """
    yield from itertools.islice(_frames(source, skipped), limit)


def _frames(source: Union[str, Path, int], skipped: Optional[List[str]]) -> Iterator[Frame]:
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return _video(int(source), f"camera{int(source)}")
    path = Path(source)
    if path.is_dir():
        return _folder(path, skipped)
    if not path.exists():
        raise DatasetError(
            f"source {path} does not exist (image folder, video file or camera index)"
        )
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _video(str(path), path.name)
    return iter([(path.name, _open(path))])


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None


def _folder(root: Path, skipped: Optional[List[str]]) -> Iterator[Frame]:
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files and (root / "images").is_dir():  # the ImageFolder layout: images/ + labels.csv
        files = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {root}")
    for path in files:
        try:
            image = _open(path)
        except DatasetError as exc:
            if skipped is None:
                raise
            log.warning("skipping unreadable image: %s", exc)
            skipped.append(path.name)
            continue
        yield path.name, image


def _video(source: Union[str, int], name: str) -> Iterator[Frame]:
    try:
        import cv2
    except ImportError:
        raise BackendUnavailableError(
            "video files and cameras need OpenCV: pip install 'edgecloud[video]'"
        ) from None
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise DatasetError(f"cannot open video source {source!r}")
    try:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            yield f"{name}#{index:06d}", Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        capture.release()
