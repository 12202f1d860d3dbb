"""Short-lived cache of replies by request id, so a resent request is not computed twice."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Optional, Tuple

from edgecloud.transport.protocol import Reply


class ReplyCache:
    """LRU of replies with a time-to-live; used by the daemon's I/O thread only."""

    def __init__(self, size: int = 4096, ttl_s: float = 60.0) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, Tuple[float, Reply]] = OrderedDict()

    def get(self, request_id: str) -> Optional[Reply]:
        entry = self._items.get(request_id)
        if entry is None:
            return None
        if time.monotonic() - entry[0] > self.ttl_s:
            del self._items[request_id]
            return None
        return entry[1]

    def put(self, request_id: str, reply: Reply) -> None:
        if self.size <= 0:
            return
        self._items[request_id] = (time.monotonic(), reply)
        self._items.move_to_end(request_id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
