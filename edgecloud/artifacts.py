"""Versioned artifacts: files identified by content hash, described by a JSON header or
manifest that names their format, and never unpickled.

INT8 calibrations, codec calibrations, learned codecs, TensorRT engines and Triton model
repositories all follow this pattern; this module is the one place that hashes, writes and
reads them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple, Union

import numpy as np

from edgecloud.errors import ArtifactError

PathLike = Union[str, Path]


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(path: PathLike, manifest: Mapping[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def read_manifest(path: PathLike, formats: Tuple[str, ...]) -> Dict[str, Any]:
    """A JSON manifest whose ``format`` is one of ``formats``; ArtifactError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") not in formats:
        raise ArtifactError(f"{path} is not a {' or '.join(formats)} manifest")
    return manifest


def save_arrays(
    path: PathLike, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> Path:
    """An ``.npz`` of ``arrays`` with the JSON ``header`` stored as a string array."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez_compressed(handle, header=np.asarray(json.dumps(header)), **arrays)
    return path


def load_arrays(path: PathLike, keys: Tuple[str, ...]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(header, arrays) of a file written by :func:`save_arrays`; no pickles are loaded."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            header = json.loads(str(npz["header"]))
            arrays = {key: npz[key] for key in keys}
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{path} is unreadable: {exc}") from exc
    if not isinstance(header, dict):
        raise ArtifactError(f"{path} has no header object")
    return header, arrays
