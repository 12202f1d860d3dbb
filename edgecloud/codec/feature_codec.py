"""FeatureCodec: quantize -> repack -> encode into a self-describing bitstream, and back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edgecloud.codec import bitstream, coders, quantizer, repack, video
from edgecloud.codec.arrays import to_float32, to_ncs, working_view
from edgecloud.codec.calibration import CodecCalibration
from edgecloud.codec.learned import LearnedCodec
from edgecloud.codec.spec import CodecSpec, parse_spec
from edgecloud.errors import BitstreamError, CalibrationError, CodecSpecError

DTYPE = "float32"
#: what a FeatureCodec's ``calibration`` may be: fitted tables or a trained bottleneck
Calibration = Union[CodecCalibration, LearnedCodec]


class FeatureCodec:
    """Encodes float feature tensors to bytes and back, as named by a spec string."""

    def __init__(self, spec: CodecSpec, calibration: Optional[Calibration] = None) -> None:
        if spec.kind == "image-input":
            raise CodecSpecError(
                f"{spec.canonical!r} compresses the input image, not a feature: "
                "use edgecloud.codec.ImageInputCodec"
            )
        if spec.needs_calibration and calibration is None:
            raise CalibrationError(
                f"codec {spec.canonical!r} needs a calibration (CodecCalibration.fit or "
                "`edgecloud calibrate`)"
            )
        if calibration is not None:
            if spec.kind not in ("quant", "learned"):
                raise CalibrationError(f"codec {spec.canonical!r} takes no calibration")
            if (spec.kind == "learned") != isinstance(calibration, LearnedCodec):
                raise CalibrationError(
                    f"codec {spec.canonical!r} cannot use {type(calibration).__name__} "
                    f"{calibration.id!r}"
                )
            calibration.check(spec)
        self.spec = spec
        self.calibration = calibration

    @classmethod
    def from_spec(cls, spec: str, calibration: Optional[Calibration] = None) -> FeatureCodec:
        return cls(parse_spec(spec), calibration)

    @property
    def name(self) -> str:
        """Canonical spec string."""
        return self.spec.canonical

    def __repr__(self) -> str:
        cal = f", calibration={self.calibration.id!r}" if self.calibration else ""
        return f"FeatureCodec({self.name!r}{cal})"

    def encode(self, feature: Any) -> bytes:
        """float tensor (C,H,W), (N,C,H,W), (N,F) or (F,) -> bitstream bytes."""
        arr = to_float32(feature)
        spec = self.spec
        header = bitstream.BitstreamHeader(
            version=bitstream.FORMAT_VERSION, spec=spec.canonical, dtype=DTYPE, shape=arr.shape
        )
        if spec.kind == "raw":
            return bitstream.pack(header, arr.astype("<f4").tobytes())
        if spec.kind == "float":
            dtype = "<f2" if spec.float_bits == 16 else "<f4"
            return bitstream.pack(
                header, coders.encode_bytes(spec.coder, arr.astype(dtype).tobytes())
            )
        if spec.kind == "learned":
            cal = self.calibration
            cal.check(spec, working_view(arr.shape)[1])
            return self._pack_learned(header, cal.encode(arr.reshape(working_view(arr.shape))))
        return self._encode_quant(arr, header)

    def encode_latents(self, latents: Any) -> bytes:
        """The bitstream of a learned codec from its encoder's latents, (L, h, w) for a
        (C, H, W) feature or (N, L, h, w) for (N, C, H, W): what a head runner built with the
        codec as its ``encoder`` returns (:func:`edgecloud.backends.create_head_runner`). Equal
        to ``encode`` of the feature, with the encoder run elsewhere (ONNX Runtime, TensorRT)."""
        cal = self.calibration
        if self.spec.kind != "learned":
            raise CodecSpecError(f"codec {self.name!r} is not a learned codec: it codes features")
        arr = to_float32(latents)
        if arr.ndim not in (3, 4):
            raise CodecSpecError(f"latents must have shape (L,h,w) or (N,L,h,w), got {arr.shape}")
        config = cal.config
        shape = (*arr.shape[:-3], config.channels, config.height, config.width)
        header = bitstream.BitstreamHeader(
            version=bitstream.FORMAT_VERSION, spec=self.spec.canonical, dtype=DTYPE, shape=shape
        )
        return self._pack_learned(header, cal.encode_latents(arr.reshape(-1, *arr.shape[-3:])))

    def _pack_learned(self, header: bitstream.BitstreamHeader, payload: bytes) -> bytes:
        """A learned codec's bitstream: ``header`` naming the codec (id and hash) + payload."""
        cal = self.calibration
        header = _replace(header, calibration_id=cal.id, calibration_hash=cal.hash)
        return bitstream.pack(header, payload)

    def _encode_quant(self, arr: np.ndarray, header: bitstream.BitstreamHeader) -> bytes:
        q = self.quantize(arr, header)
        payload = b"" if q.symbols is None else self._encode_symbols(q.symbols, q.order, q.h, q.w)
        return bitstream.pack(q.header, payload)

    def quantize(
        self, feature: Any, header: Optional[bitstream.BitstreamHeader] = None
    ) -> Quantized:
        """The quantize and repack stages of a ``q*`` spec: the symbols of the transmitted
        channels and the header that describes them (ranges, mask, calibration), before any
        coder (for stream coding, :mod:`edgecloud.codec.stream`)."""
        spec, cal = self.spec, self.calibration
        arr = to_float32(feature)
        if header is None:
            header = bitstream.BitstreamHeader(
                version=bitstream.FORMAT_VERSION, spec=spec.canonical, dtype=DTYPE, shape=arr.shape
            )
        x = to_ncs(arr)
        n, c, h, w = working_view(arr.shape)
        if cal is not None:
            cal.check(spec, c)
        fields = {}
        if spec.clip == "msg":
            lo, hi = quantizer.message_ranges(x, spec.scope)
            keep = hi > lo if spec.scope == "pc" else np.ones(c, dtype=bool)
            fields.update(lo=lo, hi=hi)
            if not keep.all():  # otherwise the mask is omitted: every channel is sent
                fields["keep"] = keep
        else:  # the calibration (referenced by hash) says which channels are sent
            lo, hi, keep = cal.lo, cal.hi, cal.keep
        if cal is not None:
            fields.update(calibration_id=cal.id, calibration_hash=cal.hash)
        permutation = cal.permutation if cal is not None else np.arange(c)
        order = repack.channel_order(permutation, keep)
        sym = quantizer.quantize(x, lo, hi, spec.bits)[:, order] if len(order) else None
        return Quantized(_replace(header, **fields), sym, order, h, w)

    def _encode_symbols(self, sym: np.ndarray, order: np.ndarray, h: int, w: int) -> bytes:
        spec = self.spec
        cal = self.calibration
        if spec.coder == "rans":
            return coders.rans_encode(sym, order, cal.cdfs)
        if spec.coder == "crans":
            return coders.crans_encode(
                sym.reshape(sym.shape[:2] + (h, w)), order, cal.cdfs, cal.mode
            )
        if spec.image_coder:
            frame = repack.to_frame(sym, h, w, tiled=spec.repack == "ct")
            return coders.encode_image(spec.coder, spec.quality, frame, spec.bits)
        if spec.video_coder:
            frames = repack.to_video_frames(sym, h, w, tiled=spec.repack == "ct")
            coder = video.video_coder(spec.coder)
            return video.encode(coder, spec.rate, spec.preset, frames, spec.bits)
        if spec.repack == "ct":
            sym = repack.to_frame(sym, h, w, tiled=True)
        return coders.encode_bytes(spec.coder, coders.pack_bits(sym, spec.bits))

    def decode(self, data: bytes) -> np.ndarray:
        """Bitstream -> float32 array of the encoded shape; raises BitstreamError."""
        cals = {self.calibration.id: self.calibration} if self.calibration else None
        return decode_bitstream(data, cals)


@dataclass
class Quantized:
    """A feature after quantize and repack: ``symbols`` (N, K, H*W) of the K transmitted
    channels in transmission ``order`` (None if no channel is sent), and its header."""

    header: bitstream.BitstreamHeader
    symbols: Optional[np.ndarray]
    order: np.ndarray
    h: int
    w: int


def _replace(header: bitstream.BitstreamHeader, **fields: Any) -> bitstream.BitstreamHeader:
    values = dict(header.__dict__, **fields)
    return bitstream.BitstreamHeader(**values)


def decode_bitstream(
    data: bytes,
    calibrations: Optional[Mapping[str, CodecCalibration]] = None,
    *,
    shape: Optional[Sequence[int]] = None,
    max_elements: int = bitstream.MAX_ELEMENTS,
) -> np.ndarray:
    """Decode any edgecloud bitstream; calibrated ones need their calibration in the mapping.

    ``shape`` (the tensor shape the caller expects, with or without a leading batch of 1) and
    ``max_elements`` are checked against the declared shape before anything is allocated.
    Raises :class:`BitstreamError` naming the problem.
    """
    header, payload = bitstream.unpack(data, shape=shape, max_elements=max_elements)
    try:
        spec = parse_spec(header.spec)
    except CodecSpecError as exc:
        raise BitstreamError(f"bitstream names an unknown codec: {exc}") from exc
    if spec.kind == "image-input" or spec.canonical != header.spec:
        raise BitstreamError(f"bitstream codec spec {header.spec!r} is not canonical")
    if header.version < 2 and spec.coder in ("rans", "crans"):
        raise BitstreamError(
            f"a format-{header.version} {spec.coder} stream used compressai's entropy coder, "
            "which this version no longer reads: encode it again with this version"
        )
    if header.dtype != DTYPE:
        raise BitstreamError(f"bitstream dtype {header.dtype!r} is not supported ({DTYPE})")
    if spec.kind == "raw":
        return _frombuffer(payload, "<f4", header.shape)
    if spec.kind == "float":
        dtype = "<f2" if spec.float_bits == 16 else "<f4"
        size = header.elements * np.dtype(dtype).itemsize
        return _frombuffer(coders.decode_bytes(spec.coder, payload, size), dtype, header.shape)
    if spec.kind == "learned":
        cal = _find_calibration(header, spec, calibrations)
        if len(header.shape) not in (3, 4):
            raise BitstreamError(f"a learned codec codes (N,C,H,W) features, not {header.shape}")
        return cal.decode(payload, working_view(header.shape)).reshape(header.shape)
    if header.reference_index != bitstream.NO_REFERENCE:
        raise BitstreamError(
            f"frame {header.frame_index} of stream {header.stream_id!r} is coded against frame "
            f"{header.reference_index}: decode it with a StreamDecoder that holds that frame"
        )
    cal = _find_calibration(header, spec, calibrations)
    return dequantize(
        header,
        spec,
        cal,
        lambda order, n, h, w: _decode_symbols(payload, spec, cal, order, n, h, w),
    )


def _frombuffer(raw: bytes, dtype: str, shape: Tuple[int, ...]) -> np.ndarray:
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(raw) != expected:
        raise BitstreamError(f"payload has {len(raw)} bytes, shape {shape} needs {expected}")
    return np.frombuffer(raw, dtype=dtype).astype(np.float32).reshape(shape)


def _find_calibration(
    header: bitstream.BitstreamHeader,
    spec: CodecSpec,
    calibrations: Optional[Mapping[str, CodecCalibration]],
) -> Optional[CodecCalibration]:
    if not header.calibration_id:
        if spec.needs_calibration:
            raise BitstreamError(f"bitstream of {spec.canonical!r} names no calibration")
        return None
    cal = (calibrations or {}).get(header.calibration_id)
    if cal is None:
        raise BitstreamError(
            f"bitstream needs calibration {header.calibration_id!r} "
            f"(hash {header.calibration_hash}), which was not provided"
        )
    if not cal.hash.startswith(header.calibration_hash) or cal.spec != spec.canonical:
        raise BitstreamError(
            f"wrong calibration: bitstream needs {header.calibration_id!r} with hash "
            f"{header.calibration_hash}, got hash {cal.hash[:16]} for {cal.spec!r}"
        )
    return cal


def dequantize(
    header: bitstream.BitstreamHeader,
    spec: CodecSpec,
    cal: Optional[CodecCalibration],
    symbols: Callable[[np.ndarray, int, int, int], np.ndarray],
) -> np.ndarray:
    """The feature of a ``q*`` stream from its header and ``symbols(order, n, h, w)``, which
    gives the (N, K, H*W) symbols of the transmitted channels (checked here)."""
    n, c, h, w = working_view(header.shape)
    if header.keep is not None and header.keep.size != c:
        raise BitstreamError(f"bitstream channel mask does not match {c} channels")
    if spec.clip == "msg":
        nr = c if spec.scope == "pc" else 1
        if header.lo is None or header.lo.size != nr:
            raise BitstreamError(f"bitstream of {spec.canonical!r} lacks its {nr} clip ranges")
        lo, hi = header.lo, header.hi
        fill = np.broadcast_to(lo, (c,))
        keep = header.keep if header.keep is not None else np.ones(c, dtype=bool)
    else:
        if cal.channels != c:
            raise BitstreamError(f"calibration {cal.id} is for {cal.channels} channels, not {c}")
        if header.keep is not None:
            raise BitstreamError("calibrated bitstream carries its own channel mask")
        lo, hi, fill, keep = cal.lo, cal.hi, cal.fill, cal.keep
    permutation = cal.permutation if cal is not None else np.arange(c)
    order = repack.channel_order(permutation, keep)
    out = np.empty((n, c, h * w), dtype=np.float32)
    out[:] = np.asarray(fill, dtype=np.float32)[None, :, None]
    if len(order):
        sym = symbols(order, n, h, w)
        if sym.shape != (n, len(order), h * w):
            raise BitstreamError(f"symbols of shape {sym.shape}, expected {(n, len(order), h * w)}")
        lo_k = lo[order] if lo.size > 1 else lo
        hi_k = hi[order] if hi.size > 1 else hi
        out[:, order] = quantizer.dequantize(sym, lo_k, hi_k, spec.bits)
    elif header.payload_size:
        raise BitstreamError("bitstream has a payload but transmits no channel")
    return out.reshape(header.shape)


def _decode_symbols(
    payload: bytes,
    spec: CodecSpec,
    cal: Optional[CodecCalibration],
    order: np.ndarray,
    n: int,
    h: int,
    w: int,
) -> np.ndarray:
    k = len(order)
    if spec.coder == "rans":
        return coders.rans_decode(payload, order, cal.cdfs, n, h * w, spec.bits)
    if spec.coder == "crans":
        sym = coders.crans_decode(payload, order, cal.cdfs, cal.mode, (n, k, h, w), spec.bits)
        return sym.reshape(n, k, h * w)
    tiled = spec.repack == "ct"
    if spec.video_coder:
        count, fh, fw = repack.video_frames_shape(n, k, h, w, tiled)
        frames = video.decode(video.video_coder(spec.coder), payload, count, fh, fw, spec.bits)
        return repack.from_video_frames(frames, n, k, h, w, tiled)
    if spec.image_coder:
        shape = repack.frame_shape(n, k, h, w, tiled)
        frame = coders.decode_image(spec.coder, spec.quality, payload, shape, spec.bits)
        return repack.from_frame(frame, n, k, h, w, tiled)
    shape = repack.frame_shape(n, k, h, w, tiled)
    count = shape[0] * shape[1]
    raw = coders.decode_bytes(spec.coder, payload, coders.packed_size(count, spec.bits))
    sym = coders.unpack_bits(raw, spec.bits, count)
    return repack.from_frame(sym.reshape(shape), n, k, h, w, tiled)
