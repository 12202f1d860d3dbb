"""The daemon's decode stage: check a bitstream before it is queued, decode batches into one array.

:func:`precheck` runs in the I/O thread on arrival and refuses, before anything of the declared
size is allocated, a bitstream whose header does not parse, whose declared shape is not the
cut's (``shape_mismatch``), or that needs a calibration the daemon does not have.
:func:`decode_batch` decodes the bitstreams of one batch into one contiguous float32 array,
ready for the tail; a stream that fails is reported per item, the others go on.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgecloud.codec import decode_bitstream, peek_header
from edgecloud.codec.bitstream import BitstreamHeader
from edgecloud.errors import BitstreamError, BitstreamShapeError, BitstreamSizeError
from edgecloud.transport.protocol import BadRequest, ErrorCode

Failure = Tuple[str, str]  # (error code, message)


def precheck(
    payload: Any, shape: Sequence[int], calibrations: Mapping[str, Any]
) -> BitstreamHeader:
    """The header of ``payload`` if it may be decoded into ``shape``; else
    :class:`BadRequest` with ``shape_mismatch``, ``too_large`` or ``corrupt_bitstream``.

    Cheap (no copy, no CRC): the CRC is checked where the stream is decoded."""
    elements = math.prod(shape)
    try:
        header = peek_header(
            payload, shape=shape, max_elements=elements, verify_crc=False, arrays=False
        )
    except BitstreamShapeError as exc:
        raise BadRequest(ErrorCode.SHAPE_MISMATCH, str(exc)) from None
    except BitstreamSizeError as exc:
        raise BadRequest(ErrorCode.TOO_LARGE, str(exc)) from None
    except BitstreamError as exc:
        raise BadRequest(ErrorCode.BAD_BITSTREAM, f"BitstreamError: {exc}") from None
    if header.calibration_id and header.calibration_id not in calibrations:
        raise BadRequest(
            ErrorCode.BAD_BITSTREAM,
            f"BitstreamError: bitstream needs calibration {header.calibration_id!r} "
            f"(hash {header.calibration_hash}), which this daemon does not have",
        )
    return header


def decode_batch(
    payloads: Sequence[Any],
    shape: Sequence[int],
    calibrations: Mapping[str, Any],
    out: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, List[Optional[Failure]], List[float]]:
    """Decode ``payloads`` into one contiguous (K, *shape) float32 array (rows of ``out`` if
    given, e.g. a shared-memory slot; it needs room for every stream).

    Returns the array of the K streams that decoded (in order), a failure (code, message) or
    None per stream, and the decode time of each stream in ms.
    """

    def decode(payload: Any, shape: Tuple[int, ...], elements: int) -> np.ndarray:
        feature = decode_bitstream(payload, calibrations, shape=shape, max_elements=elements)
        return check_finite(feature)

    return decode_rows(payloads, shape, decode, out)


#: decodes one item into a feature of ``shape`` (at most ``elements``), or raises
ItemDecoder = Callable[[Any, Tuple[int, ...], int], np.ndarray]


def decode_rows(
    items: Sequence[Any],
    shape: Sequence[int],
    decode: ItemDecoder,
    out: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, List[Optional[Failure]], List[float]]:
    """:func:`decode_batch` with any per-item decoder: the rows that decoded, a failure or
    None per item (a :class:`BadRequest`'s code, ``shape_mismatch``, or ``corrupt_bitstream``
    for anything else the decoder raises), ms per item."""
    shape = tuple(shape)
    elements = int(np.prod(shape))
    if out is None:
        out = np.empty((len(items), *shape), dtype=np.float32)
    failures: List[Optional[Failure]] = []
    times: List[float] = []
    row = 0
    for item in items:
        start = time.perf_counter()
        failure = _decode_into(out[row], decode, item, shape, elements)
        failures.append(failure)
        row += failure is None
        times.append((time.perf_counter() - start) * 1000.0)
    return out[:row], failures, times


def check_finite(feature: np.ndarray) -> np.ndarray:
    """``feature``, or BadRequest ``corrupt_bitstream`` if it holds NaN or infinity."""
    if not np.isfinite(feature).all():
        raise BadRequest(ErrorCode.BAD_BITSTREAM, "decoded feature contains NaN or infinity")
    return feature


def _decode_into(
    row: np.ndarray, decode: ItemDecoder, item: Any, shape: Tuple[int, ...], elements: int
) -> Optional[Failure]:
    try:
        feature = decode(item, shape, elements)
    except BadRequest as exc:
        return exc.code, str(exc)
    except BitstreamShapeError as exc:
        return ErrorCode.SHAPE_MISMATCH, str(exc)
    except Exception as exc:  # the codec names the problem; the daemon keeps going
        return ErrorCode.BAD_BITSTREAM, f"{type(exc).__name__}: {exc}"
    row[...] = feature.reshape(shape)
    return None


def warm_up_codecs(calibrations: Mapping[str, Any]) -> None:
    """One encode/decode round trip through every calibrated or learned codec (compiles the
    coders, builds tables and modules) before a process says it is ready."""
    import numpy as np

    from edgecloud.codec import FeatureCodec, LearnedCodec

    for calibration in calibrations.values():
        codec = FeatureCodec.from_spec(calibration.spec, calibration)
        if isinstance(calibration, LearnedCodec):
            config = calibration.config
            shape = (config.channels, config.height, config.width)
        else:
            shape = (calibration.channels, 2, 2)
        codec.decode(codec.encode(np.zeros(shape, np.float32)))
