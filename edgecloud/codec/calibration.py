"""Codec calibration: clip ranges, pruning mask, CCD permutation and rANS tables.

A calibration is fitted once on features of calibration images for one canonical spec and
saved as a small versioned ``.npz`` file (no pickles). Bitstreams reference it by ``id`` and
the first bytes of its content ``hash``. The rANS tables are integer CDFs
(:func:`edgecloud.codec.rans.build_cdf`), built once here and used as stored by encoder and
decoder alike (format 2; format-1 files held compressai's tables and are refused for
``rans``/``crans``, which must be fitted again).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from edgecloud.artifacts import load_arrays, save_arrays
from edgecloud.codec import allocation, coders, quantizer, rans, repack
from edgecloud.codec.arrays import to_float32, to_ncs, working_view
from edgecloud.codec.spec import CodecSpec, parse_spec
from edgecloud.errors import ArtifactError, CalibrationError

CALIBRATION_VERSION = 2
READABLE_VERSIONS = (1, 2)
_ID_RE = re.compile(r"^[A-Za-z0-9._+-]{1,100}$")
_ARRAYS = ("lo", "hi", "fill", "keep", "permutation", "cdfs", "mode")


@dataclass
class CodecCalibration:
    """Calibration data for one codec spec and one feature channel count."""

    spec: str  # canonical spec
    channels: int
    lo: np.ndarray  # clip ranges, (C,) or (1,)
    hi: np.ndarray
    fill: np.ndarray  # (C,) value of channels that are not transmitted
    keep: np.ndarray  # (C,) bool, False = constant on the calibration set, pruned
    permutation: np.ndarray  # (C,) transmission order
    cdfs: np.ndarray  # integer rANS CDFs (C * tables per channel, 2**bits + 1) int32, or (0, 0)
    mode: np.ndarray  # (C,) most frequent symbol per channel (crans contexts), or (0,)
    name: str = ""
    meta: Dict[str, Any] = field(default_factory=dict)
    version: int = CALIBRATION_VERSION

    @property
    def id(self) -> str:
        """``name`` if given, else the first 8 hex digits of the hash (short: it is in every
        bitstream; the spec, model and cut are in the file's header)."""
        return self.name or self.hash[:8]

    @cached_property
    def hash(self) -> str:
        """sha256 (hex) over the spec, channel count and all arrays."""
        h = hashlib.sha256()
        h.update(json.dumps([self.version, self.spec, self.channels]).encode())
        for key in _ARRAYS:
            arr = np.ascontiguousarray(getattr(self, key))
            h.update(f"{key}{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
        return h.hexdigest()

    @classmethod
    def fit(
        cls,
        features: Any,
        spec: Union[str, CodecSpec],
        name: str = "",
        sensitivity: Optional[np.ndarray] = None,
        **meta: Any,
    ) -> CodecCalibration:
        """Fit on calibration features (N, C, H, W) (or (N, F)); ``meta`` is stored as notes.

        ``rdX`` specs need ``sensitivity``: the task's per-channel sensitivity to noise
        (:func:`edgecloud.partition.sensitivity.channel_sensitivity`) on these features."""
        parsed = parse_spec(spec) if isinstance(spec, str) else spec
        if parsed.kind != "quant":
            raise CalibrationError(f"codec {parsed.canonical!r} has nothing to calibrate")
        if name and not _ID_RE.match(name):
            raise CalibrationError(f"calibration name {name!r} must match {_ID_RE.pattern}")
        arr = to_float32(features)
        if arr.ndim not in (2, 4):
            raise CalibrationError(
                f"calibration features must be batched (N,C,H,W) or (N,F), got {arr.shape}"
            )
        x = to_ncs(arr)
        bits = parsed.bits
        chan_lo, chan_hi = quantizer.message_ranges(x, "pc")
        dropped = np.zeros(x.shape[1], dtype=bool)
        if parsed.clip == "msg":
            lo, hi = quantizer.message_ranges(x, parsed.scope)
        elif parsed.target_rate is not None:
            if sensitivity is None:
                raise CalibrationError(
                    f"codec {parsed.canonical!r} allocates bits by channel sensitivity: pass "
                    "sensitivity= (edgecloud.partition.sensitivity.channel_sensitivity)"
                )
            try:
                plan = allocation.allocate(x, sensitivity, bits, parsed.target_rate)
            except ValueError as exc:
                raise CalibrationError(str(exc)) from exc
            lo, hi, dropped = plan.lo, plan.hi, plan.dropped
            meta.update(predicted_bits_per_element=round(plan.rate, 4))
        else:
            lo, hi = quantizer.calibrated_ranges(
                x, parsed.clip, parsed.scope, bits, parsed.percentile, parsed.step_sigmas
            )
        keep = (chan_hi > chan_lo) & ~dropped
        if parsed.scope == "pc":
            keep &= hi > lo
        lo_c = np.broadcast_to(lo, chan_lo.shape)
        hi_c = np.broadcast_to(hi, chan_hi.shape)
        fill = np.clip(x.mean(axis=(0, 2)), lo_c, hi_c).astype(np.float32)
        if parsed.repack == "ccd":
            permutation = repack.ccd_permutation(x)
        else:
            permutation = np.arange(x.shape[1], dtype=np.int64)
        cdfs = np.zeros((0, 0), dtype=np.int32)
        mode = np.zeros(0, dtype=np.int64)
        if parsed.coder in ("rans", "crans"):
            sym = _symbols(x, parsed, lo, hi)
            counts = _histograms(sym, 1 << bits)
            if parsed.coder == "crans":
                mode = counts.argmax(axis=1)
                n, c, h, w = working_view(arr.shape)
                counts = coders.context_counts(sym.reshape(n, c, h, w), mode, 1 << bits)
            cdfs = rans.build_cdf(counts.reshape(-1, 1 << bits))
        meta = dict(meta, calibration_images=int(x.shape[0]))
        return cls(
            spec=parsed.canonical,
            channels=int(x.shape[1]),
            lo=lo,
            hi=hi,
            fill=fill,
            keep=keep,
            permutation=permutation,
            cdfs=cdfs,
            mode=mode,
            name=name,
            meta=meta,
        )

    def save(self, directory: Union[str, Path]) -> Path:
        """Write ``<directory>/<id>.npz``; returns the path."""
        header = {
            "version": self.version,
            "spec": self.spec,
            "channels": self.channels,
            "name": self.name,
            "hash": self.hash,
            "meta": self.meta,
        }
        arrays = {key: getattr(self, key) for key in _ARRAYS}
        return save_arrays(Path(directory) / f"{self.id}.npz", header, arrays)

    @classmethod
    def load(cls, path: Union[str, Path]) -> CodecCalibration:
        """Read a file written by :meth:`save`; raises CalibrationError if unusable."""
        path = Path(path)
        try:
            header, arrays = load_arrays(path, _ARRAYS)
        except ArtifactError as exc:
            raise CalibrationError(f"calibration file {exc}") from exc
        version = header.get("version")
        if version not in READABLE_VERSIONS:
            raise CalibrationError(
                f"calibration file {path} has version {version}, this build reads "
                f"{READABLE_VERSIONS}"
            )
        cal = cls(
            spec=header["spec"],
            channels=int(header["channels"]),
            name=header.get("name", ""),
            meta=header.get("meta", {}),
            version=version,
            **arrays,
        )
        if cal.hash != header.get("hash"):
            raise CalibrationError(f"calibration file {path} is corrupted (hash mismatch)")
        if version < 2 and cal.cdfs.size:
            raise CalibrationError(
                f"calibration file {path} (format {version}) holds compressai's rANS tables; "
                f"fit {cal.spec} again with this version (`edgecloud sweep --save-calibrations`)"
            )
        return cal

    def check(self, spec: CodecSpec, channels: Optional[int] = None) -> None:
        """Raise CalibrationError unless this calibration fits ``spec`` (and ``channels``)."""
        if spec.canonical != self.spec:
            raise CalibrationError(
                f"calibration {self.id} was fitted for {self.spec!r}, not {spec.canonical!r}"
            )
        if channels is not None and channels != self.channels:
            raise CalibrationError(
                f"calibration {self.id} is for {self.channels} channels, feature has {channels}"
            )


def _symbols(x: np.ndarray, spec: CodecSpec, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Calibration symbols (N, C, S) as the codec would make them."""
    if spec.clip == "msg":  # quantize each calibration image as its own message
        return np.concatenate(
            [
                quantizer.quantize(
                    m[None], *quantizer.message_ranges(m[None], spec.scope), spec.bits
                )
                for m in x
            ]
        )
    return quantizer.quantize(x, lo, hi, spec.bits)


def _histograms(sym: np.ndarray, levels: int) -> np.ndarray:
    """Per-channel counts (C, levels) of symbols (N, C, S)."""
    per_channel = np.moveaxis(sym, 1, 0).reshape(sym.shape[1], -1).astype(np.int64)
    offsets = (np.arange(len(per_channel)) * levels)[:, None]
    counts = np.bincount((per_channel + offsets).ravel(), minlength=levels * len(per_channel))
    return counts.reshape(len(per_channel), levels)


def load_calibrations(directory: Union[str, Path]) -> Dict[str, CodecCalibration]:
    """Every ``*.npz`` codec calibration and learned codec in ``directory``, keyed by id (for
    decode_bitstream)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise CalibrationError(f"calibration directory {folder} does not exist")
    cals = [load_calibration_file(path) for path in sorted(folder.glob("*.npz"))]
    return {cal.id: cal for cal in cals}


def load_calibration_file(path: Union[str, Path]) -> Any:
    """A codec calibration or a learned codec (:class:`~edgecloud.codec.learned.LearnedCodec`),
    by the file's header; CalibrationError names what is wrong."""
    from edgecloud.codec.learned import LearnedCodec, is_learned_file

    try:
        header, _ = load_arrays(path, ())
    except ArtifactError as exc:
        raise CalibrationError(f"calibration file {exc}") from exc
    return LearnedCodec.load(path) if is_learned_file(header) else CodecCalibration.load(path)
