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

from edgecloud.cloud.decode import Failure, check_finite, decode_rows
from edgecloud.codec.stream import MissingReferenceError, StreamDecoder
from edgecloud.transport.protocol import BadRequest, ErrorCode

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
        with self._lock:
            return decode_rows(items, shape, self._decode)

    def _decode(self, item: Tuple[Any, str, Any], shape: Tuple[int, ...], elements: int):
        client, stream_id, payload = item
        key = (client, stream_id)
        now = time.monotonic()
        stream = self._streams.get(key)
        if stream is None:
            self._expire(now)
            if len(self._streams) >= self.max_streams:
                raise BadRequest(
                    ErrorCode.TOO_MANY_STREAMS,
                    f"this daemon holds {len(self._streams)} streams (limit {self.max_streams})",
                )
            stream = _Stream(StreamDecoder(self._calibrations), now)
        try:
            feature = check_finite(
                stream.decoder.decode(payload, shape=shape, max_elements=elements)
            )
        except MissingReferenceError as exc:
            self._streams.pop(key, None)
            self.keyframes_requested += 1
            raise BadRequest(ErrorCode.NEED_KEYFRAME, str(exc)) from None
        except Exception:
            self._streams.pop(key, None)  # the reference is gone with the damaged frame
            raise
        stream.used = now
        self._streams[key] = stream
        return feature

    def _expire(self, now: float) -> None:
        idle = [k for k, s in self._streams.items() if now - s.used > self.idle_s]
        for key in idle:
            del self._streams[key]

    def describe(self) -> Dict[str, Any]:
        return {"streams": len(self._streams), "keyframes_requested": self.keyframes_requested}
