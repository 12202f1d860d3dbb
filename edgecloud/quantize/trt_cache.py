"""TensorRT calibration caches (implicit INT8, e.g. for the DLA) in TensorRT's text format.

The format TensorRT's calibrators read and write: a header line
``TRT-<version>-<algorithm>`` (version ``major*1000 + minor*100 + patch``, e.g. ``8502`` for
8.5.2, ``10300`` for 10.3.0), then one ``<tensor name>: <scale>`` line per tensor, the scale
(``amax / 127``) as the 8 hex digits of its big-endian IEEE-754 float32. TensorRT rejects a
cache whose header names another version or algorithm, so the engine builder rewrites the
header for the TensorRT it runs (:func:`with_header`).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Dict, Mapping, Tuple, Union

from edgecloud.errors import CalibrationError

DEFAULT_VERSION = "8502"  # TensorRT 8.5.2 (JetPack 5.1); rewritten at build time
DEFAULT_ALGORITHM = "EntropyCalibration2"


def trt_version_number(version: str) -> str:
    """``"8.5.2.2"`` -> ``"8502"``; ``"10.3.0"`` -> ``"10300"`` (TensorRT's cache header number)."""
    parts = [int(p) for p in version.split(".")[:3]] + [0, 0]
    return str(parts[0] * 1000 + parts[1] * 100 + parts[2])


def format_cache(
    scales: Mapping[str, float],
    *,
    version: str = DEFAULT_VERSION,
    algorithm: str = DEFAULT_ALGORITHM,
) -> str:
    """Text of a calibration cache for per-tensor ``scales`` (tensor name -> amax/127)."""
    lines = [f"TRT-{version}-{algorithm}"]
    for name, scale in scales.items():
        if ":" in name or "\n" in name:
            raise CalibrationError(f"tensor name {name!r} cannot be written to a calibration cache")
        if not math.isfinite(scale) or scale <= 0:
            raise CalibrationError(f"scale {scale!r} of tensor {name!r} is not positive")
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    return "\n".join(lines) + "\n"


def parse_cache(text: str) -> Tuple[str, Dict[str, float]]:
    """(header, {tensor name: scale}) of a calibration cache; CalibrationError if malformed."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise CalibrationError("not a TensorRT calibration cache: missing 'TRT-...' header")
    scales: Dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(": ")
        if not sep or len(value) != 8:
            raise CalibrationError(f"calibration cache line {number} is malformed: {line!r}")
        try:
            scales[name] = struct.unpack(">f", bytes.fromhex(value))[0]
        except ValueError as exc:
            raise CalibrationError(f"calibration cache line {number}: bad hex {value!r}") from exc
    return lines[0], scales


def with_header(text: str, version: str, algorithm: str = DEFAULT_ALGORITHM) -> bytes:
    """The cache ``text`` with its header rewritten for TensorRT ``version`` (e.g. '10.3.0')."""
    _, scales = parse_cache(text)
    return format_cache(scales, version=trt_version_number(version), algorithm=algorithm).encode()


def write_cache(path: Union[str, Path], scales: Mapping[str, float], **kwargs) -> Path:
    path = Path(path)
    path.write_text(format_cache(scales, **kwargs))
    return path
