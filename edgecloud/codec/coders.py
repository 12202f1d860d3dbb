"""Entropy/lossless coders: byte coders, bit packing, rANS (compiled, integer tables), image
codecs (Pillow).

Decoders raise :class:`BitstreamError` on any payload they cannot decode to the expected size.
"""

from __future__ import annotations

import io
import zlib
from typing import List, Sequence, Tuple

import lz4.block
import numpy as np
import zstandard
from PIL import Image

from edgecloud.codec import rans
from edgecloud.errors import BitstreamError

ZSTD_LEVEL = 19
ZLIB_LEVEL = 9


def encode_bytes(coder: str, data: bytes) -> bytes:
    if coder == "none":
        return data
    if coder == "zlib":
        return zlib.compress(data, ZLIB_LEVEL)
    if coder == "zstd":
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    if coder == "lz4":
        return lz4.block.compress(data, mode="high_compression", store_size=False)
    raise ValueError(f"not a byte coder: {coder!r}")


def decode_bytes(coder: str, payload: bytes, size: int) -> bytes:
    """Decompress ``payload``; exactly ``size`` bytes must come out."""
    try:
        if coder == "none":
            out = payload
        elif coder == "zlib":
            d = zlib.decompressobj()
            out = d.decompress(payload, size + 1)
            if not d.eof:
                raise BitstreamError("zlib payload is incomplete or larger than the tensor")
        elif coder == "zstd":  # streamed with a cap: a frame's declared size is not trusted
            with zstandard.ZstdDecompressor().stream_reader(payload) as reader:
                out = reader.read(size + 1)
        elif coder == "lz4":
            out = lz4.block.decompress(payload, uncompressed_size=size)
        else:
            raise ValueError(f"not a byte coder: {coder!r}")
    except (zlib.error, zstandard.ZstdError, lz4.block.LZ4BlockError) as exc:
        raise BitstreamError(f"{coder} payload cannot be decompressed: {exc}") from exc
    if len(out) != size:
        raise BitstreamError(f"{coder} payload decodes to {len(out)} bytes, expected {size}")
    return out


def pack_bits(sym: np.ndarray, bits: int) -> bytes:
    """Pack unsigned symbols densely, ``bits`` bits each (big-endian bit order)."""
    flat = sym.reshape(-1)
    if bits == 8:
        return flat.astype(np.uint8).tobytes()
    if bits == 16:
        return flat.astype("<u2").tobytes()
    planes = np.unpackbits(flat.astype(">u2").view(np.uint8).reshape(-1, 2), axis=1)
    return np.packbits(planes[:, 16 - bits :]).tobytes()


def packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits` -> uint8/uint16 array of ``count`` symbols."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if bits == 8:
        return buf.copy()
    if bits == 16:
        return np.frombuffer(data, dtype="<u2").astype(np.uint16)
    planes = np.unpackbits(buf)[: count * bits].reshape(count, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint32)
    values = planes.astype(np.uint32) @ weights
    return values.astype(np.uint8 if bits <= 8 else np.uint16)


# ---- entropy coders (edgecloud.codec.rans, integer tables from the calibration) -------------
# ``rans``: one table per channel. ``crans``: three checkerboard passes, the table chosen by
# channel and the number of active decoded neighbours (see edgecloud.codec.rans).
CONTEXTS = rans.CONTEXTS


def rans_encode(sym: np.ndarray, channels: Sequence[int], cdf: np.ndarray) -> bytes:
    """Symbols (N, C', S) of the listed calibration channels -> rANS bytes."""
    chans = np.asarray(channels, dtype=np.int64)
    return rans.encode_indexed(sym, np.broadcast_to(chans[None, :, None], sym.shape), cdf)


def _check_symbols(out: np.ndarray, bits: int, coder: str) -> None:
    if out.size and (out.min() < 0 or out.max() >= 1 << bits):
        raise BitstreamError(f"{coder} payload decodes to out-of-range symbols")


def rans_decode(
    payload: bytes, channels: Sequence[int], cdf: np.ndarray, n: int, spatial: int, bits: int
) -> np.ndarray:
    chans = np.asarray(channels, dtype=np.int64)
    tables = np.broadcast_to(chans[None, :, None], (n, len(chans), spatial))
    out = rans.decode_indexed(payload, tables, cdf)
    _check_symbols(out, bits, "rans")
    return out.astype(np.uint8 if bits <= 8 else np.uint16)


def context_index(sym: np.ndarray, mode: np.ndarray, step: int, decoded: np.ndarray) -> np.ndarray:
    """Context (0..8) of every symbol of pass ``step`` (0, 1, 2) from the decoded ones (the
    numpy form of the compiled coder's contexts, for calibration counts)."""
    active = (sym != mode[None, :, None, None]) & decoded
    if step == 0:
        return np.zeros(sym.shape, dtype=np.int64)
    return 1 + 4 * (step - 1) + _neighbours(active, diagonal=step == 1)


def _passes(height: int, width: int) -> List[np.ndarray]:
    hh, ww = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    p1 = (hh % 2 == 0) & (ww % 2 == 0)
    p2 = (hh % 2 == 1) & (ww % 2 == 1)
    return [p1, p2, ~(p1 | p2)]


def _neighbours(active: np.ndarray, diagonal: bool) -> np.ndarray:
    pad = np.pad(active.astype(np.int8), ((0, 0), (0, 0), (1, 1), (1, 1)))
    if diagonal:
        parts = (pad[..., :-2, :-2], pad[..., :-2, 2:], pad[..., 2:, :-2], pad[..., 2:, 2:])
    else:
        parts = (pad[..., :-2, 1:-1], pad[..., 2:, 1:-1], pad[..., 1:-1, :-2], pad[..., 1:-1, 2:])
    return np.minimum(sum(parts), 3)


def context_counts(sym: np.ndarray, mode: np.ndarray, levels: int) -> np.ndarray:
    """Symbol counts (C, CONTEXTS, levels) of calibration symbols (N, C, H, W)."""
    n, c, h, w = sym.shape
    counts = np.zeros((c, CONTEXTS, levels), dtype=np.int64)
    everything = np.ones(sym.shape, dtype=bool)
    chan = np.broadcast_to(np.arange(c)[None, :, None, None], sym.shape)
    for step, mask in enumerate(_passes(h, w)):
        ctx = context_index(sym, mode, step, everything)
        sel = np.broadcast_to(mask[None, None], sym.shape)
        flat = (chan[sel] * CONTEXTS + ctx[sel]) * levels + sym[sel].astype(np.int64)
        counts += np.bincount(flat, minlength=counts.size).reshape(counts.shape)
    return counts


def crans_encode(
    sym: np.ndarray, channels: Sequence[int], cdf: np.ndarray, mode: np.ndarray
) -> bytes:
    """Symbols (N, C', H, W) of the listed calibration channels -> context-coded rANS bytes."""
    return rans.crans_encode(sym, np.asarray(channels, dtype=np.int64), mode, cdf)


def crans_decode(
    payload: bytes,
    channels: Sequence[int],
    cdf: np.ndarray,
    mode: np.ndarray,
    shape: Tuple[int, int, int, int],
    bits: int,
) -> np.ndarray:
    """Inverse of :func:`crans_encode` -> symbols of ``shape`` (N, C', H, W)."""
    dtype = np.uint8 if bits <= 8 else np.uint16
    chans = np.asarray(channels, dtype=np.int64)
    sym = rans.crans_decode(payload, chans, mode, cdf, shape, dtype)
    _check_symbols(sym, bits, "crans")
    return sym


def _to_8bit(frame: np.ndarray, bits: int, lossy: bool) -> np.ndarray:
    if lossy and bits < 8:  # spread the levels over 0..255 so the codec's error is relative
        return np.rint(frame.astype(np.float64) * 255.0 / ((1 << bits) - 1)).astype(np.uint8)
    return frame.astype(np.uint8)


def encode_image(coder: str, quality, frame: np.ndarray, bits: int) -> bytes:
    """2-D symbol frame -> PNG (8 or 16 bit), WebP (lossless or quality NN) or JPEG bytes."""
    buf = io.BytesIO()
    if coder == "png":
        if bits > 8:
            image = Image.fromarray(frame.astype(np.uint16))
        else:
            image = Image.fromarray(frame.astype(np.uint8))
        image.save(buf, format="PNG", optimize=True)
    elif coder == "webp":
        image = Image.fromarray(_to_8bit(frame, bits, quality is not None))
        if quality is None:
            image.save(buf, format="WEBP", lossless=True, quality=80, method=4)
        else:
            image.save(buf, format="WEBP", quality=quality, method=4)
    elif coder == "jpeg":
        image = Image.fromarray(_to_8bit(frame, bits, True))
        image.save(buf, format="JPEG", quality=quality)
    else:
        raise ValueError(f"not an image coder: {coder!r}")
    return buf.getvalue()


#: the one Pillow format each image coder may decode, and the image modes it may produce
IMAGE_FORMATS = {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}
_IMAGE_MODES = {
    "png": ("L",),
    "png16": ("I;16", "I;16B", "I", "L"),
    "webp": ("L", "RGB", "RGBA"),  # libwebp decodes a grey frame to RGB
    "jpeg": ("L",),
}


def decode_image(coder: str, quality, payload: bytes, shape, bits: int) -> np.ndarray:
    """Inverse of :func:`encode_image` -> symbols of ``shape``.

    Only the spec's own format is opened (no other Pillow decoder is reachable), and the frame
    size and mode are checked from the image header before its pixels are decoded.
    """
    fmt = IMAGE_FORMATS[coder]
    try:
        with Image.open(io.BytesIO(payload), formats=[fmt]) as image:
            if image.size != (shape[1], shape[0]):
                raise BitstreamError(f"{coder} frame is {image.size}, expected {shape[::-1]}")
            modes = _IMAGE_MODES["png16" if coder == "png" and bits > 8 else coder]
            if image.mode not in modes:
                raise BitstreamError(f"{coder} frame has mode {image.mode}, expected {modes}")
            if coder == "png" and bits > 8:
                frame = np.asarray(image, dtype=np.uint16)
            else:
                frame = np.asarray(image.convert("L"), dtype=np.uint8)
    except BitstreamError:
        raise
    except Exception as exc:  # Pillow raises many types on damaged images
        raise BitstreamError(f"{coder} payload cannot be decoded: {exc}") from exc
    levels = (1 << bits) - 1
    lossy = coder == "jpeg" or (coder == "webp" and quality is not None)
    if lossy and bits < 8:
        frame = np.rint(frame.astype(np.float64) * levels / 255.0)
    if frame.max(initial=0) > levels:
        if not lossy:
            raise BitstreamError(f"{coder} frame holds values above {levels}")
        frame = np.minimum(frame, levels)
    return frame.astype(np.uint8 if bits <= 8 else np.uint16)
