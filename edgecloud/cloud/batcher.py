"""Dynamic batcher: a bounded queue that hands out batches of requests for the same tail.

Like Triton's dynamic batcher: a batch is released as soon as ``max_batch_size`` requests for
one (model, cut) are waiting, or when its oldest request has waited ``max_queue_delay_s``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Hashable, List, Optional


@dataclass
class QueueItem:
    key: Hashable
    value: Any
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    def __init__(self, max_batch_size: int, max_queue_delay_s: float, capacity: int) -> None:
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.capacity = capacity
        self._items: Deque[QueueItem] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, key: Hashable, value: Any) -> bool:
        """Enqueue; False if the queue is full or closed (the caller replies ``queue_full``)."""
        with self._cond:
            if self._closed or len(self._items) >= self.capacity:
                return False
            self._items.append(QueueItem(key, value))
            self._cond.notify()
            return True

    def close(self) -> None:
        """Accept nothing more; ``get_batch`` drains what is queued, then returns None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get_batch(self) -> Optional[List[QueueItem]]:
        """Block until a batch is ready; None once closed and empty."""
        with self._cond:
            while not self._items:
                if self._closed:
                    return None
                self._cond.wait()
            key = self._items[0].key
            deadline = self._items[0].enqueued + self.max_queue_delay_s
            while not self._closed:
                if sum(1 for it in self._items if it.key == key) >= self.max_batch_size:
                    break
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: List[QueueItem] = []
            rest: Deque[QueueItem] = deque()
            for item in self._items:
                if item.key == key and len(batch) < self.max_batch_size:
                    batch.append(item)
                else:
                    rest.append(item)
            self._items = rest
            return batch
