"""Admission: per-client limits and a fair, bounded queue that hands out batches.

Every request is admitted (or refused) in the I/O thread before anything is decoded:

- **per-client in-flight limit**: a client (its CurveZMQ key, else its ZeroMQ routing id) may
  have at most ``max_inflight_per_client`` requests queued or being computed; beyond it its
  requests get ``queue_full`` at once, so a flood only ever fills the flooder's own share;
- **per-client rate limit** (optional): a token bucket of ``rate_per_client`` requests/s and
  ``rate_burst`` tokens; beyond it ``rate_limited``;
- **global bounds**: at most ``queue_size`` requests and ``queue_bytes`` payload bytes queued.

Limits come from :class:`~edgecloud.cloud.config.AdmissionConfig` (``[admission]``).

Batches are formed like Triton's dynamic batcher (a batch of one (model, cut) leaves when
``max_batch_size`` requests wait or its oldest has waited ``max_queue_delay_s``), but requests
are taken **round-robin across clients**, so one client's backlog never delays another's
requests by more than one request per batch. With ``fair_batch_share`` a client also fills at
most ``ceil(max_batch_size / active clients)`` places of a batch (active: a request admitted
in the last ``ACTIVE_S``), so a backlog does not keep every batch full while others send.

Used by the I/O thread only: no locks.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Hashable, List, Optional, Tuple

from edgecloud.cloud.config import AdmissionConfig
from edgecloud.transport.protocol import BadRequest, ErrorCode

ClientKey = bytes

#: a client counts as active for ``fair_batch_share`` this long after its last request
ACTIVE_S = 1.0


@dataclass
class Queued:
    """A request waiting for its batch."""

    client: ClientKey
    key: Hashable  # (model, cut): what can share a batch
    item: Any
    nbytes: int
    enqueued: float = field(default_factory=time.perf_counter)


class _TokenBucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, burst: float) -> None:
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self, rate: float, burst: float) -> bool:
        now = time.monotonic()
        self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class _KeyQueue:
    """Requests of one (model, cut): one deque per client, served round-robin."""

    def __init__(self) -> None:
        self.clients: OrderedDict[ClientKey, Deque[Queued]] = OrderedDict()
        self.count = 0

    def oldest(self) -> float:
        return min(q[0].enqueued for q in self.clients.values())

    def push(self, entry: Queued) -> None:
        queue = self.clients.get(entry.client)
        if queue is None:
            queue = self.clients[entry.client] = deque()
        queue.append(entry)
        self.count += 1

    def take(self, n: int, share: int) -> List[Queued]:
        """Up to ``n`` requests, one per client in turn and at most ``share`` of any one
        client; clients served move to the back."""
        out: List[Queued] = []
        taken: Dict[ClientKey, int] = {}
        while len(out) < n:
            open_clients = [c for c in self.clients if taken.get(c, 0) < share]
            if not open_clients:
                break
            for client in open_clients:
                queue = self.clients[client]
                out.append(queue.popleft())
                taken[client] = taken.get(client, 0) + 1
                if queue:
                    self.clients.move_to_end(client)
                else:
                    del self.clients[client]
                if len(out) == n:
                    break
        self.count -= len(out)
        return out


class Admission:
    """Per-client limits + fair dynamic batching (see the module doc)."""

    def __init__(
        self,
        limits: AdmissionConfig,
        queue_size: int,
        max_batch_size: int,
        max_queue_delay_s: float,
    ) -> None:
        self.limits = limits
        self.queue_size = queue_size
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self._keys: Dict[Hashable, _KeyQueue] = {}
        self._inflight: Dict[ClientKey, int] = {}
        self._buckets: Dict[ClientKey, _TokenBucket] = {}
        self._seen: Dict[ClientKey, float] = {}  # client -> when it last had a request admitted
        self.queued = 0
        self.queued_bytes = 0

    # -- admission ---------------------------------------------------------------------------

    def check(self, client: ClientKey, nbytes: int) -> None:
        """Raise :class:`BadRequest` (``queue_full`` / ``rate_limited``) unless a request of
        ``client`` with ``nbytes`` of payload may be queued now (costs a rate-limit token)."""
        lim = self.limits
        inflight = self._inflight.get(client, 0)
        if inflight >= lim.max_inflight_per_client:
            raise BadRequest(
                ErrorCode.QUEUE_FULL,
                f"this client has {inflight} requests in flight "
                f"(limit {lim.max_inflight_per_client})",
            )
        if self.queued >= self.queue_size:
            raise BadRequest(ErrorCode.QUEUE_FULL, f"queue is full ({self.queue_size} requests)")
        if self.queued_bytes + nbytes > lim.queue_bytes:
            raise BadRequest(ErrorCode.QUEUE_FULL, f"queue is full ({lim.queue_bytes} bytes)")
        if lim.rate_per_client > 0:
            bucket = self._buckets.get(client)
            if bucket is None:
                bucket = self._buckets[client] = _TokenBucket(lim.rate_burst)
            if not bucket.take(lim.rate_per_client, lim.rate_burst):
                raise BadRequest(
                    ErrorCode.RATE_LIMITED,
                    f"more than {lim.rate_per_client:g} requests/s from this client",
                )

    def admit(self, client: ClientKey, key: Hashable, item: Any, nbytes: int) -> None:
        """Queue ``item`` (after :meth:`check`); ``key`` says what may share a batch."""
        queue = self._keys.get(key)
        if queue is None:
            queue = self._keys[key] = _KeyQueue()
        entry = Queued(client, key, item, nbytes)
        queue.push(entry)
        if self.limits.fair_batch_share:  # (pruned in _share)
            self._seen[client] = entry.enqueued
        self._inflight[client] = self._inflight.get(client, 0) + 1
        self.queued += 1
        self.queued_bytes += nbytes

    def release(self, client: ClientKey) -> None:
        """A request of ``client`` was answered (or dropped): it no longer counts."""
        left = self._inflight.get(client, 0) - 1
        if left > 0:
            self._inflight[client] = left
        else:
            self._inflight.pop(client, None)
            if len(self._buckets) > 4 * self.queue_size:  # forget idle clients
                self._buckets.pop(client, None)

    def inflight(self, client: ClientKey) -> int:
        return self._inflight.get(client, 0)

    # -- batching ----------------------------------------------------------------------------

    def next_batch(
        self, now: float, flush: bool = False
    ) -> Optional[Tuple[Hashable, List[Queued]]]:
        """The batch that is due (full, or its oldest request waited long enough, or
        ``flush``), oldest key first; None if no batch is due."""
        best: Optional[Tuple[float, Hashable]] = None
        for key, queue in self._keys.items():
            if not queue.count:
                continue
            oldest = queue.oldest()
            due = (
                flush
                or queue.count >= self.max_batch_size
                or now - oldest >= self.max_queue_delay_s
            )
            if due and (best is None or oldest < best[0]):
                best = (oldest, key)
        if best is None:
            return None
        key = best[1]
        batch = self._keys[key].take(self.max_batch_size, self._share(now))
        if not self._keys[key].count:
            del self._keys[key]
        self.queued -= len(batch)
        self.queued_bytes -= sum(entry.nbytes for entry in batch)
        return key, batch

    def _share(self, now: float) -> int:
        """Most requests of one client in a batch: with ``fair_batch_share``, the batch size
        over the clients active in the last ``ACTIVE_S`` (so that one client's backlog does
        not fill every batch while others send), else the batch size."""
        if not self.limits.fair_batch_share:
            return self.max_batch_size
        stale = [c for c, t in self._seen.items() if now - t > ACTIVE_S and c not in self._inflight]
        for client in stale:
            del self._seen[client]
        return max(1, -(-self.max_batch_size // max(1, len(self._seen))))

    def next_deadline(self) -> Optional[float]:
        """perf_counter time at which the next not-yet-full batch falls due (None if empty)."""
        oldest = [q.oldest() for q in self._keys.values() if q.count]
        return min(oldest) + self.max_queue_delay_s if oldest else None

    def drain(self) -> List[Queued]:
        """Remove and return every queued request (at shutdown)."""
        out: List[Queued] = []
        for queue in self._keys.values():
            out.extend(queue.take(queue.count, queue.count))
        self._keys.clear()
        self.queued = self.queued_bytes = 0
        return out
