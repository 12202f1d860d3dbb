"""Streams: the features of a camera's consecutive frames, each coded against the previous
*decoded* one.

Two kinds, chosen by the spec:

- **residual** (a calibrated ``q*`` spec with a lossless symbol coder, e.g.
  ``q4-ncc-crans-s2.5-pt``): a keyframe is the spec's own stream; frame *t* sends the symbol
  differences to the decoded frame *t-1*, differences of at most ``skip_levels`` sent as 0
  (the receiver keeps the reference; the sender tracks what the receiver holds, so errors do
  not accumulate), zig-zag mapped and rANS-coded with tables fitted to the frame (one per
  context: the co-located reference symbol, capped at 3; sent zstd-compressed ahead of the
  words). Quantizer and calibration are the spec's.
- **video** (``ct`` with ``h264``, ``hevc``, ``vp9`` or ``av1``): the tiled frames are a real
  video: one encoder per stream in low-delay mode (no B-frames, no look-ahead: one packet per
  frame), P-frames between keyframes; each keyframe starts a fresh encoder and decoder, so
  that a receiver can always start there. Use a calibrated clip (``-mse-pt``, ``-p99.9-pt``):
  with ``msg`` ranges every frame's pixels move with its own min/max and prediction suffers.

Keyframes: the first frame, every ``keyframe_interval`` frames, and on request
(:meth:`StreamEncoder.request_keyframe`, e.g. after the daemon answered ``need_keyframe``).
The header of every frame carries the stream id, its index and the index of its reference
(none for keyframes). A :class:`StreamDecoder` refuses, with :class:`MissingReferenceError`,
a frame whose reference it does not hold: a lost frame or a restarted receiver never decodes
into a silently wrong feature.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import numpy as np
import zstandard

from edgecloud.codec import bitstream, rans, video
from edgecloud.codec.calibration import CodecCalibration
from edgecloud.codec.feature_codec import (
    FeatureCodec,
    _decode_symbols,
    _find_calibration,
    dequantize,
)
from edgecloud.codec.repack import from_video_frames, to_video_frames, video_frames_shape
from edgecloud.codec.spec import CodecSpec, parse_spec
from edgecloud.errors import BitstreamError, CodecSpecError

NO_REFERENCE = bitstream.NO_REFERENCE
#: symbol coders whose keyframes decode to exactly the symbols sent (residuals need that)
LOSSLESS_SYMBOL_CODERS = ("none", "zlib", "zstd", "lz4", "rans", "crans", "png")
TEMPORAL_VIDEO_CODERS = ("h264", "hevc", "vp9", "av1")
RESIDUAL_ZSTD_LEVEL = 3
MAX_STREAM_ID = 64


class MissingReferenceError(BitstreamError):
    """A frame coded against a frame this decoder does not hold: send a keyframe."""


def stream_kind(spec: CodecSpec) -> str:
    """``residual`` or ``video``; CodecSpecError for specs that cannot code streams."""
    if spec.kind != "quant":
        raise CodecSpecError(f"{spec.canonical!r}: only q* specs code streams")
    if spec.video_coder:
        if spec.coder not in TEMPORAL_VIDEO_CODERS or spec.repack != "ct":
            raise CodecSpecError(
                f"{spec.canonical!r}: video streams are ct frames of "
                f"{', '.join(TEMPORAL_VIDEO_CODERS)} (e.g. q8-ct-h264-qp32-mse-pt)"
            )
        return "video"
    if spec.clip == "msg" or spec.coder not in LOSSLESS_SYMBOL_CODERS:
        raise CodecSpecError(
            f"{spec.canonical!r}: residual streams need a calibrated clip (not msg) and a "
            f"lossless symbol coder ({', '.join(LOSSLESS_SYMBOL_CODERS)})"
        )
    return "residual"


@dataclass
class StreamEncoder:
    """Codes the features of one stream; ``encode`` returns one bitstream per frame."""

    spec: str
    calibration: Optional[CodecCalibration] = None
    stream_id: str = "stream"
    keyframe_interval: int = 30
    skip_levels: int = 0
    _codec: FeatureCodec = field(init=False, repr=False)
    _kind: str = field(init=False, repr=False)
    _index: int = field(default=0, init=False, repr=False)
    _last_key: int = field(default=-1, init=False, repr=False)
    _key_requested: bool = field(default=True, init=False, repr=False)
    _reference: Optional[np.ndarray] = field(default=None, init=False, repr=False)
    _encoder: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._codec = FeatureCodec.from_spec(self.spec, self.calibration)
        self._kind = stream_kind(self._codec.spec)
        if not 0 < len(self.stream_id.encode()) <= MAX_STREAM_ID:
            raise ValueError(f"stream id must have 1..{MAX_STREAM_ID} bytes")
        if self.keyframe_interval < 1 or self.skip_levels < 0:
            raise ValueError("keyframe_interval must be >= 1 and skip_levels >= 0")
        if self.skip_levels and self._kind == "video":
            raise ValueError("skip_levels is for residual streams; video streams set the rate")

    @property
    def frame_index(self) -> int:
        """Index of the next frame."""
        return self._index

    @property
    def last_keyframe(self) -> int:
        """Index of the last keyframe coded (-1: none yet)."""
        return self._last_key

    def request_keyframe(self) -> None:
        """Code the next frame as a keyframe (the receiver lost its reference)."""
        self._key_requested = True

    def encode(self, feature: Any) -> bytes:
        """The bitstream of the next frame (a keyframe when one is due)."""
        index = self._index
        key = self._key_requested or index - self._last_key >= self.keyframe_interval
        header = bitstream.BitstreamHeader(
            version=bitstream.FORMAT_VERSION,
            spec=self._codec.name,
            dtype="float32",
            shape=np.shape(feature),
            stream_id=self.stream_id,
            frame_index=index,
            reference_index=NO_REFERENCE if key else index - 1,
        )
        quantized = self._codec.quantize(feature, header)
        sym = quantized.symbols
        if sym is None:
            raise CodecSpecError("no channel is transmitted: nothing to code as a stream")
        if self._kind == "video":
            payload = self._video_payload(quantized, key)
        elif key:
            payload = self._codec._encode_symbols(sym, quantized.order, quantized.h, quantized.w)
            self._reference = sym.astype(np.int32)
        else:
            payload = self._residual_payload(sym)
        self._index += 1
        if key:
            self._last_key, self._key_requested = index, False
        return bitstream.pack(quantized.header, payload)

    def close(self) -> None:
        """End the stream's current video, if any."""
        if self._encoder is not None:
            self._encoder.close()
            self._encoder = None

    def _residual_payload(self, sym: np.ndarray) -> bytes:
        residual = sym.astype(np.int32) - self._reference
        if self.skip_levels:
            residual[np.abs(residual) <= self.skip_levels] = 0
        context = _residual_context(self._reference)
        self._reference += residual  # what the receiver will hold
        return _encode_residual(residual, context, self._codec.spec.bits)

    def _video_payload(self, quantized: Any, key: bool) -> bytes:
        spec = self._codec.spec
        n, k = quantized.symbols.shape[:2]
        frames = to_video_frames(quantized.symbols, quantized.h, quantized.w, tiled=True)
        if key or self._encoder is None:
            self.close()
            coder = video.video_coder(spec.coder)
            self._encoder = video.LowDelayEncoder(coder, spec.rate, spec.preset, spec.bits)
        return self._encoder.encode(frames)


@dataclass
class _StreamState:
    last_index: int
    reference: Any  # residual: int32 symbols; video: a LowDelayDecoder


class StreamDecoder:
    """Decodes the frames of any number of streams (keyed by stream id), in order."""

    def __init__(self, calibrations: Optional[Mapping[str, CodecCalibration]] = None) -> None:
        self.calibrations = dict(calibrations or {})
        self._streams: Dict[str, _StreamState] = {}

    def forget(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)

    def decode(
        self,
        data: bytes,
        *,
        shape: Optional[Any] = None,
        max_elements: int = bitstream.MAX_ELEMENTS,
    ) -> np.ndarray:
        """The feature of one frame. Raises :class:`MissingReferenceError` when the frame's
        reference is not the last frame decoded on its stream, BitstreamError otherwise; after
        any error the stream needs a keyframe."""
        header, payload = bitstream.unpack(data, shape=shape, max_elements=max_elements)
        if not header.stream_id:
            raise BitstreamError("not a stream frame (no stream id): use decode_bitstream")
        try:
            spec = parse_spec(header.spec)
        except CodecSpecError as exc:
            raise BitstreamError(f"bitstream names an unknown codec: {exc}") from exc
        if spec.canonical != header.spec:
            raise BitstreamError(f"bitstream codec spec {header.spec!r} is not canonical")
        try:
            kind = stream_kind(spec)
        except CodecSpecError as exc:
            raise BitstreamError(str(exc)) from exc
        key = header.reference_index == NO_REFERENCE
        state = self._streams.get(header.stream_id)
        if not key and (state is None or state.last_index != header.reference_index):
            have = "nothing" if state is None else f"frame {state.last_index}"
            self.forget(header.stream_id)
            raise MissingReferenceError(
                f"frame {header.frame_index} of stream {header.stream_id!r} is coded against "
                f"frame {header.reference_index}, this decoder holds {have}: send a keyframe"
            )
        self.forget(header.stream_id)  # until this frame has decoded
        cal = _find_calibration(header, spec, self.calibrations)
        holder: Dict[str, Any] = {}

        def symbols(order: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
            k = len(order)
            if kind == "video":
                decoder = video.LowDelayDecoder(video.video_coder(spec.coder), spec.bits) if key \
                    else state.reference  # fmt: skip
                count, fh, fw = video_frames_shape(n, k, h, w, tiled=True)
                frames = decoder.decode(payload, count, fh, fw)
                holder["reference"] = decoder
                return from_video_frames(frames, n, k, h, w, tiled=True)
            if key:
                sym = _decode_symbols(payload, spec, cal, order, n, h, w).astype(np.int32)
            else:
                if state.reference.shape != (n, k, h * w):
                    raise BitstreamError("frame shape differs from its reference's")
                context = _residual_context(state.reference)
                sym = state.reference + _decode_residual(payload, context, spec.bits)
                if sym.size and (sym.min() < 0 or sym.max() >= 1 << spec.bits):
                    raise BitstreamError("residual frame decodes to out-of-range symbols")
            holder["reference"] = sym
            return sym

        feature = dequantize(header, spec, cal, symbols)
        self._streams[header.stream_id] = _StreamState(header.frame_index, holder["reference"])
        return feature


#: residuals are coded with one rANS table per context: the reference symbol, capped
RESIDUAL_CONTEXTS = 4


def _residual_context(reference: np.ndarray) -> np.ndarray:
    return np.minimum(reference, RESIDUAL_CONTEXTS - 1)


def _encode_residual(residual: np.ndarray, context: np.ndarray, bits: int) -> bytes:
    """Zig-zag residuals, rANS-coded with per-frame tables (one per context) sent first:
    u32 length + zstd(u16 counts (contexts, 2^(bits+1) - 1)), then the rANS words."""
    levels = (1 << (bits + 1)) - 1
    zigzag = ((residual << 1) ^ (residual >> 31)).astype(np.int64).reshape(-1)
    ctx = context.astype(np.int64).reshape(-1)
    counts = np.zeros((RESIDUAL_CONTEXTS, levels), dtype=np.int64)
    np.add.at(counts, (ctx, zigzag), 1)
    counts = np.minimum(counts, 0xFFFF)
    table = zstandard.ZstdCompressor(level=RESIDUAL_ZSTD_LEVEL).compress(
        counts.astype("<u2").tobytes()
    )
    words = rans.encode_indexed(zigzag, ctx, rans.build_cdf(counts))
    return struct.pack("<I", len(table)) + table + words


def _decode_residual(payload: bytes, context: np.ndarray, bits: int) -> np.ndarray:
    levels = (1 << (bits + 1)) - 1
    if len(payload) < 4:
        raise BitstreamError("residual payload is truncated")
    (size,) = struct.unpack_from("<I", payload)
    expected = RESIDUAL_CONTEXTS * levels * 2
    try:
        with zstandard.ZstdDecompressor().stream_reader(payload[4 : 4 + size]) as reader:
            raw = reader.read(expected + 1)
    except zstandard.ZstdError as exc:
        raise BitstreamError(f"residual tables cannot be decompressed: {exc}") from exc
    if len(raw) != expected:
        raise BitstreamError(f"residual tables have {len(raw)} bytes, expected {expected}")
    counts = np.frombuffer(raw, dtype="<u2").astype(np.int64).reshape(RESIDUAL_CONTEXTS, levels)
    zigzag = rans.decode_indexed(
        payload[4 + size :], context.astype(np.int64), rans.build_cdf(counts)
    )
    return ((zigzag >> 1) ^ -(zigzag & 1)).astype(np.int32)
