"""The self-describing feature bitstream (format version 2; version 1 is still read).

All integers little-endian::

    magic        4 bytes  b"ECFB"
    version      u8       FORMAT_VERSION
    spec         u8 length + ASCII canonical codec spec (e.g. "q4-ccd-rans-mse-pc")
    dtype        u8 length + ASCII dtype of the decoded tensor ("float32")
    shape        u8 ndim + u32 per dimension
    calibration  u8 length + ASCII calibration id; if length > 0: 8-byte hash prefix
    clip ranges  u16 count + count float32 lo + count float32 hi (per-message ranges; 0 if none)
    channel mask u16 channels + ceil(channels / 8) bytes, bit set = channel transmitted; 0 when
                 every channel is sent or the calibration (referenced by hash) defines the mask
    stream       (version 2) u8 length + ASCII stream id; if length > 0: u32 frame index and
                 u32 index of the frame it is coded against (0xFFFFFFFF: none, a keyframe)
    payload      u32 length + payload bytes
    crc32        u32 over every byte before it

Version 2 also changed the ``rans``/``crans`` payloads (edgecloud's compiled coder instead of
compressai's); version-1 streams of those coders are refused, all others still decode.

Anything that does not parse, is cut short, has trailing bytes, fails the CRC or declares a
tensor that is too large (or of another shape than the caller expects) raises
:class:`BitstreamError` with the reason, before anything of the declared size is allocated.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from edgecloud.errors import BitstreamError, BitstreamShapeError, BitstreamSizeError

MAGIC = b"ECFB"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
NO_REFERENCE = 0xFFFFFFFF
#: default bound on the elements a bitstream may declare (256 MiB of float32)
MAX_ELEMENTS = 1 << 26
MAX_NDIM = 4
HASH_BYTES = 8


@dataclass(frozen=True)
class BitstreamHeader:
    """Everything in a bitstream except the payload."""

    version: int
    spec: str
    dtype: str
    shape: Tuple[int, ...]
    calibration_id: str = ""
    calibration_hash: str = ""  # hex of the first HASH_BYTES bytes
    lo: Optional[np.ndarray] = None
    hi: Optional[np.ndarray] = None
    keep: Optional[np.ndarray] = None  # bool per channel
    stream_id: str = ""  # frames of a stream: its id, the frame's index and its reference
    frame_index: int = 0
    reference_index: int = NO_REFERENCE
    payload_size: int = 0
    total_size: int = 0

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def _short_str(text: str, what: str) -> bytes:
    raw = text.encode("ascii")
    if len(raw) > 255:
        raise ValueError(f"{what} longer than 255 bytes: {text!r}")
    return struct.pack("<B", len(raw)) + raw


def pack(header: BitstreamHeader, payload: bytes) -> bytes:
    """Serialise ``header`` (its size fields are ignored) and ``payload``."""
    parts = [MAGIC, struct.pack("<B", FORMAT_VERSION), _short_str(header.spec, "spec")]
    parts.append(_short_str(header.dtype, "dtype"))
    parts.append(struct.pack(f"<B{len(header.shape)}I", len(header.shape), *header.shape))
    parts.append(_short_str(header.calibration_id, "calibration id"))
    if header.calibration_id:
        parts.append(bytes.fromhex(header.calibration_hash)[:HASH_BYTES])
    if header.lo is None:
        parts.append(struct.pack("<H", 0))
    else:
        lo = np.asarray(header.lo, dtype="<f4")
        parts += [struct.pack("<H", lo.size), lo.tobytes()]
        parts.append(np.asarray(header.hi, dtype="<f4").tobytes())
    if header.keep is None:
        parts.append(struct.pack("<H", 0))
    else:
        keep = np.asarray(header.keep, dtype=bool)
        parts += [struct.pack("<H", keep.size), np.packbits(keep).tobytes()]
    parts.append(_short_str(header.stream_id, "stream id"))
    if header.stream_id:
        parts.append(struct.pack("<II", header.frame_index, header.reference_index))
    parts += [struct.pack("<I", len(payload)), payload]
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


class _Reader:
    """Reads fields off a memoryview (no copies until a field is taken as bytes)."""

    def __init__(self, data: memoryview) -> None:
        self.data, self.pos, self.size = data, 0, len(data)

    def _truncated(self, n: int, what: str) -> BitstreamError:
        return BitstreamError(
            f"truncated bitstream: {what} needs {n} bytes at offset {self.pos}, "
            f"only {self.size - self.pos} left"
        )

    def take(self, n: int, what: str) -> memoryview:
        pos = self.pos
        end = pos + n
        if end > self.size:
            raise self._truncated(n, what)
        self.pos = end
        return self.data[pos:end]

    def unpack(self, fmt: struct.Struct, what: str) -> Tuple[Any, ...]:
        pos = self.pos
        if pos + fmt.size > self.size:
            raise self._truncated(fmt.size, what)
        self.pos = pos + fmt.size
        return fmt.unpack_from(self.data, pos)

    def byte(self, what: str) -> int:
        pos = self.pos
        if pos >= self.size:
            raise self._truncated(1, what)
        self.pos = pos + 1
        return self.data[pos]

    def text(self, what: str) -> str:
        n = self.byte(what)
        raw = self.take(n, what)
        try:
            return str(raw, "ascii")
        except UnicodeDecodeError as exc:
            raise BitstreamError(f"corrupted bitstream: {what} is not ASCII") from exc


_U16, _U32, _U32X2 = (struct.Struct(f) for f in ("<H", "<I", "<II"))
_SHAPES = {n: struct.Struct(f"<{n}I") for n in range(1, MAX_NDIM + 1)}


def unpack(
    data: bytes,
    *,
    max_elements: int = MAX_ELEMENTS,
    shape: Optional[Sequence[int]] = None,
) -> Tuple[BitstreamHeader, bytes]:
    """Parse and verify a bitstream -> (header, payload). Raises BitstreamError.

    The declared shape must have 1..4 non-zero dimensions and at most ``max_elements``
    elements; with ``shape`` it must equal ``shape`` or ``(1, *shape)``.
    """
    header, payload = _parse(data, max_elements, shape, verify_crc=True, arrays=True)
    return header, bytes(payload)


def _parse(
    data: Any, max_elements: int, shape: Optional[Sequence[int]], verify_crc: bool, arrays: bool
) -> Tuple[BitstreamHeader, memoryview]:
    """Parse ``data``; ``arrays=False`` leaves ``lo``, ``hi`` and ``keep`` None (skipped)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"bitstream must be bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    r = _Reader(view)
    magic = bytes(r.take(len(MAGIC), "magic"))
    if magic != MAGIC:
        raise BitstreamError(f"not an edgecloud feature bitstream (magic {magic!r})")
    version = r.byte("version")
    if version not in READABLE_VERSIONS:
        raise BitstreamError(
            f"unsupported bitstream format version {version} (this build reads "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    spec = r.text("codec spec")
    dtype = r.text("dtype")
    ndim = r.byte("shape")
    if not 1 <= ndim <= MAX_NDIM:
        raise BitstreamError(f"bitstream declares a {ndim}-dimensional tensor (1..{MAX_NDIM})")
    declared = r.unpack(_SHAPES[ndim], "shape")
    check_shape(declared, max_elements=max_elements, shape=shape)
    calibration_id = r.text("calibration id")
    calibration_hash = r.take(HASH_BYTES, "calibration hash").hex() if calibration_id else ""
    (nranges,) = r.unpack(_U16, "clip ranges")
    lo = hi = keep = None
    ranges = r.take(8 * nranges, "clip ranges")
    if nranges and arrays:
        lo = np.frombuffer(ranges[: 4 * nranges], dtype="<f4").astype(np.float32)
        hi = np.frombuffer(ranges[4 * nranges :], dtype="<f4").astype(np.float32)
    (nmask,) = r.unpack(_U16, "channel mask")
    mask = r.take((nmask + 7) // 8, "channel mask")
    if nmask and arrays:
        keep = np.unpackbits(np.frombuffer(mask, np.uint8))[:nmask].astype(bool)
    stream_id, frame_index, reference_index = "", 0, NO_REFERENCE
    if version >= 2:
        stream_id = r.text("stream id")
        if stream_id:
            frame_index, reference_index = r.unpack(_U32X2, "stream frame")
    (payload_size,) = r.unpack(_U32, "payload length")
    payload = r.take(payload_size, "payload")
    (crc,) = r.unpack(_U32, "crc32")
    if r.pos != r.size:
        raise BitstreamError(f"corrupted bitstream: {r.size - r.pos} trailing bytes")
    if verify_crc and zlib.crc32(view[: r.pos - 4]) != crc:
        raise BitstreamError("corrupted bitstream: CRC32 mismatch")
    header = BitstreamHeader(
        version=version,
        spec=spec,
        dtype=dtype,
        shape=declared,
        calibration_id=calibration_id,
        calibration_hash=calibration_hash,
        lo=lo,
        hi=hi,
        keep=keep,
        stream_id=stream_id,
        frame_index=frame_index,
        reference_index=reference_index,
        payload_size=payload_size,
        total_size=r.size,
    )
    return header, payload


def check_shape(
    declared: Tuple[int, ...],
    *,
    max_elements: int = MAX_ELEMENTS,
    shape: Optional[Sequence[int]] = None,
) -> None:
    """BitstreamError unless ``declared`` is a valid tensor shape within the bounds."""
    if not declared or 0 in declared:
        raise BitstreamError(f"bitstream declares an invalid tensor shape {declared}")
    if shape is not None:
        want = tuple(map(int, shape))
        if declared != want and declared != (1, *want):
            raise BitstreamShapeError(
                f"bitstream declares shape {list(declared)}, expected {list(want)}"
            )
    elements = math.prod(declared)
    if elements > max_elements:
        raise BitstreamSizeError(
            f"bitstream declares {elements} elements {list(declared)}, more than the limit "
            f"{max_elements}"
        )


def peek_header(
    data: bytes,
    *,
    max_elements: int = MAX_ELEMENTS,
    shape: Optional[Sequence[int]] = None,
    verify_crc: bool = True,
    arrays: bool = True,
) -> BitstreamHeader:
    """The header of a bitstream, without copying or decoding the payload (bounds: see
    :func:`unpack`). For a cheap check on arrival, when the stream is verified again where
    it is decoded: ``verify_crc=False`` skips the CRC over the whole stream, ``arrays=False``
    leaves the clip ranges and channel mask unread (None)."""
    return _parse(data, max_elements, shape, verify_crc, arrays)[0]
