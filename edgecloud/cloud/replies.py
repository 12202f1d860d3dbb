"""Replies by client: the reply cache and in-flight tracking, keyed by (client, request id).

A resent request (same client, same id) is answered from the cache, or attached to the
original while it is still being computed; another client reusing the same id is a different
request. The cache is bounded in entries, bytes and age. Used by the I/O thread only.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

from edgecloud.transport.protocol import Reply

ReplyKey = Tuple[bytes, str]  # (client key, request id)


class ReplyBook:
    def __init__(
        self, size: int = 4096, max_bytes: int = 32 * 1024 * 1024, ttl_s: float = 60.0
    ) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.bytes = 0
        self._cache: OrderedDict[ReplyKey, Tuple[float, Reply, int]] = OrderedDict()
        self._waiting: Dict[ReplyKey, List[bytes]] = {}

    # -- in flight ---------------------------------------------------------------------------

    def waiting(self, key: ReplyKey) -> Optional[List[bytes]]:
        """Routing ids waiting for the request ``key``, if it is being computed."""
        return self._waiting.get(key)

    def start(self, key: ReplyKey, routing_id: bytes) -> None:
        self._waiting[key] = [routing_id]

    def attach(self, key: ReplyKey, routing_id: bytes) -> None:
        """A resend of a request still being computed: answer this routing id too."""
        waiting = self._waiting[key]
        if routing_id not in waiting:
            waiting.append(routing_id)

    def finish(self, key: ReplyKey) -> List[bytes]:
        """The routing ids to send the finished request's reply to."""
        return self._waiting.pop(key, [])

    def inflight(self) -> int:
        return len(self._waiting)

    # -- cache -------------------------------------------------------------------------------

    def get(self, key: ReplyKey) -> Optional[Reply]:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if time.monotonic() - entry[0] > self.ttl_s:
            self._remove(key)
            return None
        return entry[1]

    def put(self, key: ReplyKey, reply: Reply, nbytes: int) -> None:
        """Cache ``reply`` (``nbytes``: its size on the wire); the oldest entries make room."""
        if self.size <= 0 or nbytes > self.max_bytes:
            return
        if key in self._cache:
            self._remove(key)
        self._cache[key] = (time.monotonic(), reply, nbytes)
        self.bytes += nbytes
        while len(self._cache) > self.size or self.bytes > self.max_bytes:
            self._remove(next(iter(self._cache)))

    def _remove(self, key: ReplyKey) -> None:
        _stamp, _reply, nbytes = self._cache.pop(key)
        self.bytes -= nbytes

    def __len__(self) -> int:
        return len(self._cache)
