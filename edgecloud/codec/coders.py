"""Entropy/lossless coders: byte coders, bit packing, rANS (compressai), image codecs (Pillow).

Decoders raise :class:`BitstreamError` on any payload they cannot decode to the expected size.
"""

from __future__ import annotations

import io
import warnings
import zlib
from typing import List, Sequence

import lz4.block
import numpy as np
import zstandard
from PIL import Image

from edgecloud.errors import BitstreamError

ZSTD_LEVEL = 19
ZLIB_LEVEL = 9
RANS_PRECISION = 16


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
        elif coder == "zstd":
            out = zstandard.ZstdDecompressor().decompress(payload, max_output_size=size + 1)
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


def rans_cdfs(histograms: np.ndarray) -> np.ndarray:
    """Per-channel quantized CDFs (C, L+2) for compressai's rANS from symbol counts (C, L).

    Every symbol gets a non-zero probability; the last entry is compressai's escape symbol.
    """
    with warnings.catch_warnings():  # compressai's import warns about torch.jit
        warnings.simplefilter("ignore")
        from compressai._CXX import pmf_to_quantized_cdf

    counts = histograms.astype(np.float64) + 0.1  # never a zero probability
    levels = counts.shape[1]
    pmf = np.concatenate([counts, np.full((len(counts), 1), 1e-3 * levels)], axis=1)
    pmf /= pmf.sum(axis=1, keepdims=True)
    return np.asarray(
        [pmf_to_quantized_cdf(row.tolist(), RANS_PRECISION) for row in pmf], dtype=np.int32
    )


def _rans_tables(cdfs: np.ndarray):
    tables: List[List[int]] = cdfs.tolist()
    return tables, [cdfs.shape[1]] * len(tables), [0] * len(tables)


def _rans_indexes(channels: Sequence[int], n: int, spatial: int) -> List[int]:
    return np.tile(np.repeat(np.asarray(channels, dtype=np.int64), spatial), n).tolist()


def rans_encode(sym: np.ndarray, channels: Sequence[int], cdfs: np.ndarray) -> bytes:
    """Symbols (N, C', S) of the listed calibration channels -> rANS bytes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from compressai.ans import RansEncoder

    tables, sizes, offsets = _rans_tables(cdfs)
    indexes = _rans_indexes(channels, sym.shape[0], sym.shape[2])
    return RansEncoder().encode_with_indexes(
        sym.reshape(-1).astype(np.int32).tolist(), indexes, tables, sizes, offsets
    )


def rans_decode(
    payload: bytes, channels: Sequence[int], cdfs: np.ndarray, n: int, spatial: int, bits: int
) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from compressai.ans import RansDecoder

    tables, sizes, offsets = _rans_tables(cdfs)
    indexes = _rans_indexes(channels, n, spatial)
    try:
        out = np.asarray(
            RansDecoder().decode_with_indexes(payload, indexes, tables, sizes, offsets),
            dtype=np.int64,
        )
    except Exception as exc:  # the C++ decoder raises assorted errors on garbage
        raise BitstreamError(f"rans payload cannot be decoded: {exc}") from exc
    if out.size != len(indexes) or out.min(initial=0) < 0 or out.max(initial=0) >= 1 << bits:
        raise BitstreamError("rans payload decodes to out-of-range symbols")
    return out.astype(np.uint8 if bits <= 8 else np.uint16).reshape(n, len(channels), spatial)


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


def decode_image(coder: str, quality, payload: bytes, shape, bits: int) -> np.ndarray:
    """Inverse of :func:`encode_image` -> symbols of ``shape``."""
    try:
        with Image.open(io.BytesIO(payload)) as image:
            if image.size != (shape[1], shape[0]):
                raise BitstreamError(f"{coder} frame is {image.size}, expected {shape[::-1]}")
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
