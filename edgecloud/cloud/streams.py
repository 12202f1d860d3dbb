"""Per-stream decoder state in the daemon: one reference per (client, stream id), bounded.

Frames of a stream (bitstreams with a stream id, see :mod:`edgecloud.codec.stream`) are
decoded here, in the order they reach a tail thread, under one lock: a frame whose reference
this daemon does not hold (the edge reconnected, a frame was lost, the daemon restarted) is
answered ``need_keyframe`` and the edge sends that frame again as a keyframe. Streams idle for
``idle_s`` are forgotten; beyond ``max_streams`` live streams a new one is refused with
``too_many_streams``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgecloud.cloud.decode import Failure
from edgecloud.codec.stream import MissingReferenceError, StreamDecoder
from edgecloud.errors import BitstreamError, BitstreamShapeError
from edgecloud.transport.protocol import ErrorCode

StreamKey = Tuple[Any, str]  # (client, stream id)


@dataclass
class _Stream:
    decoder: StreamDecoder
    used: float


class StreamStates:
    """The daemon's stream references (thread-safe)."""

    def __init__(
        self, calibrations: Mapping[str, Any], max_streams: int = 1024, idle_s: float = 60.0
    ) -> None:
        self._calibrations = calibrations
        self.max_streams, self.idle_s = max_streams, idle_s
        self._streams: Dict[StreamKey, _Stream] = {}
        self._lock = threading.Lock()
        self.keyframes_requested = 0

    def __len__(self) -> int:
        return len(self._streams)

    def decode_batch(
        self, items: Sequence[Tuple[Any, str, Any]], shape: Sequence[int]
    ) -> Tuple[np.ndarray, List[Optional[Failure]], List[float]]:
        """``items`` are (client, stream id, bitstream); like
        :func:`edgecloud.cloud.decode.decode_batch`: the rows that decoded, a failure or None
        per item, ms per item."""
        shape = tuple(shape)
        elements = int(np.prod(shape))
        out = np.empty((len(items), *shape), dtype=np.float32)
        failures: List[Optional[Failure]] = []
        times: List[float] = []
        row = 0
        with self._lock:
            for client, stream_id, payload in items:
                start = time.perf_counter()
                failure = self._decode_into(out[row], (client, stream_id), payload, shape, elements)
                failures.append(failure)
                row += failure is None
                times.append((time.perf_counter() - start) * 1000.0)
        return out[:row], failures, times

    def _decode_into(
        self, row: np.ndarray, key: StreamKey, payload: Any, shape: Tuple[int, ...], elements: int
    ) -> Optional[Failure]:
        now = time.monotonic()
        stream = self._streams.get(key)
        if stream is None:
            self._expire(now)
            if len(self._streams) >= self.max_streams:
                return (
                    ErrorCode.TOO_MANY_STREAMS,
                    f"this daemon holds {len(self._streams)} streams (limit {self.max_streams})",
                )
            stream = _Stream(StreamDecoder(self._calibrations), now)
        try:
            feature = stream.decoder.decode(payload, shape=shape, max_elements=elements)
        except MissingReferenceError as exc:
            self._streams.pop(key, None)
            self.keyframes_requested += 1
            return ErrorCode.NEED_KEYFRAME, str(exc)
        except BitstreamShapeError as exc:
            self._streams.pop(key, None)
            return ErrorCode.SHAPE_MISMATCH, str(exc)
        except BitstreamError as exc:
            self._streams.pop(key, None)  # the reference is gone with the damaged frame
            return ErrorCode.BAD_BITSTREAM, f"{type(exc).__name__}: {exc}"
        feature = feature.reshape(shape)
        if not np.isfinite(feature).all():
            self._streams.pop(key, None)
            return ErrorCode.BAD_BITSTREAM, "decoded feature contains NaN or infinity"
        stream.used = now
        self._streams[key] = stream
        row[...] = feature
        return None

    def _expire(self, now: float) -> None:
        idle = [k for k, s in self._streams.items() if now - s.used > self.idle_s]
        for key in idle:
            del self._streams[key]

    def describe(self) -> Dict[str, Any]:
        return {"streams": len(self._streams), "keyframes_requested": self.keyframes_requested}
