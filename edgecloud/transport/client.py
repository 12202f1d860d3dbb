"""Edge side of the transport: a DEALER with a bounded window of requests in flight.

One I/O thread owns the socket. :meth:`FeatureClient.submit` returns a future at once (or
blocks while ``window`` requests are unanswered: back-pressure), so the caller can compute the
next feature while this one is on the wire. Unanswered requests are resent with the *same*
request id after ``timeout_s`` (the daemon answers duplicates from its reply cache); the
socket itself reconnects with back-off, so a restarted daemon is picked up transparently.

With several endpoints (daemons) the DEALER round-robins requests across the daemons it is
connected to; a resend may go to another daemon, and whichever reply comes first resolves the
future (later ones are counted as duplicates): every request is answered exactly once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import zmq

from edgecloud.errors import ProtocolError, TransportError
from edgecloud.transport.protocol import ErrorCode, Reply, Request, pack_request, unpack_reply
from edgecloud.transport.sockets import SocketOptions, endpoint_list, make_dealer, send_frames

log = logging.getLogger(__name__)
_instance_ids = itertools.count()
#: a request ZeroMQ could not queue (no daemon connected yet, or its queue full) is tried
#: again this soon; it only counts as an attempt once queued
UNQUEUED_RETRY_S = 0.02


@dataclass
class _Pending:
    frames: List[bytes]
    future: Future
    deadline: float
    timeout_s: float
    retries: int
    attempts: int = 1
    first_sent: float = field(default_factory=time.perf_counter)
    queued: bool = False  # the current attempt was handed to ZeroMQ


@dataclass
class ClientStats:
    sent: int = 0
    resent: int = 0
    replies: int = 0
    duplicates: int = 0
    malformed: int = 0
    timeouts: int = 0
    max_in_flight: int = 0


class FeatureClient:
    """Asynchronous request/reply client for an edgecloud daemon.

    Args:
        endpoint: e.g. ``tcp://127.0.0.1:5555``, or several (daemons serving the same tails).
        window: most requests in flight; ``submit`` blocks beyond it.
        timeout_s: time to wait for a reply before resending the request.
        retries: resends before the future fails with :class:`TransportError`.
        options: socket options (``MAXMSGSIZE``, heartbeats, reconnect back-off).
    """

    def __init__(
        self,
        endpoint: Union[str, Sequence[str]],
        *,
        window: int = 8,
        timeout_s: float = 5.0,
        retries: int = 3,
        options: Optional[SocketOptions] = None,
        context: Optional[zmq.Context] = None,
    ) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.endpoints = endpoint_list(endpoint)
        if not self.endpoints:
            raise ValueError("no endpoint given")
        self.endpoint = ", ".join(self.endpoints)  # for messages
        self.timeout_s = timeout_s
        self.retries = retries
        self.stats = ClientStats()
        self._slots = threading.BoundedSemaphore(window)
        self._ctx = context or zmq.Context.instance()
        self._sock = make_dealer(self._ctx, self.endpoints, options)  # first: validates options
        self._outbox: queue.Queue = queue.Queue()
        self._wake_addr = f"inproc://edgecloud-client-{id(self)}-{next(_instance_ids)}"
        self._wake_lock = threading.Lock()
        self._wake_rx = self._ctx.socket(zmq.PULL)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx = self._ctx.socket(zmq.PUSH)
        self._wake_tx.connect(self._wake_addr)
        self._pending: Dict[str, _Pending] = {}
        self._closed = threading.Event()
        self._submit_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="edgecloud-client", daemon=True)
        self._thread.start()

    # -- public API ---------------------------------------------------------------------------

    def submit(
        self,
        request: Request,
        payload: bytes = b"",
        *,
        timeout_s: Optional[float] = None,
        retries: Optional[int] = None,
    ) -> Future:
        """Send a request; the future resolves to its :class:`Reply` (error replies included)
        or fails with :class:`TransportError` after ``retries`` resends without an answer
        (``timeout_s`` and ``retries`` default to the client's)."""
        frames = pack_request(request, payload)
        policy = (
            self.timeout_s if timeout_s is None else timeout_s,
            self.retries if retries is None else retries,
        )
        while not self._slots.acquire(timeout=0.1):
            if self._closed.is_set():
                raise TransportError("client is closed")
        with self._submit_lock:  # after close() nothing enters the outbox: no orphan futures
            if self._closed.is_set():
                self._slots.release()
                raise TransportError("client is closed")
            future: Future = Future()
            future.set_running_or_notify_cancel()  # not cancellable: the request is on its way
            future.add_done_callback(lambda _f: self._slots.release())
            self._outbox.put((request.id, frames, future, policy))
        self._wake()
        return future

    def request(self, request: Request, payload: bytes = b"", **policy: Any) -> Reply:
        """Blocking :meth:`submit` (``policy``: ``timeout_s``, ``retries``)."""
        return self.submit(request, payload, **policy).result()

    def ping(self, **policy: Any) -> Reply:
        """Ask the daemon for its models, cuts, weights ids and calibrations."""
        return self.request(Request(kind="ping"), **policy)

    def close(self) -> None:
        """Stop the I/O thread; unanswered requests fail with :class:`TransportError`."""
        with self._submit_lock:
            if self._closed.is_set():
                return
            self._closed.set()
        self._wake()
        self._thread.join()
        with self._wake_lock:
            self._wake_tx.close(0)

    def __enter__(self) -> FeatureClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- I/O thread ---------------------------------------------------------------------------

    def _wake(self) -> None:
        # zmq.Again: wake-ups are already pending, or the I/O thread has finished
        with self._wake_lock, contextlib.suppress(zmq.Again):
            if not self._wake_tx.closed:
                self._wake_tx.send(b"", zmq.NOBLOCK)

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        try:
            while not self._closed.is_set():
                events = dict(poller.poll(self._poll_timeout_ms()))
                if self._wake_rx in events:
                    while self._wake_rx.poll(0):
                        self._wake_rx.recv()
                self._send_outbox()
                if self._sock in events:
                    self._receive()
                self._resend_expired()
        except Exception as exc:  # pragma: no cover - a bug; fail loudly, not silently
            log.exception("client I/O thread failed")
            self._fail_all(TransportError(f"client I/O thread failed: {exc}"))
            raise
        self._fail_all(TransportError("client closed before the reply arrived"))
        self._sock.close(0)
        self._wake_rx.close(0)

    def _poll_timeout_ms(self) -> int:
        if not self._pending:
            return 1000
        nearest = min(p.deadline for p in self._pending.values())
        return max(0, int((nearest - time.perf_counter()) * 1000) + 1)

    def _send_outbox(self) -> None:
        while True:
            try:
                request_id, frames, future, (timeout_s, retries) = self._outbox.get_nowait()
            except queue.Empty:
                return
            if request_id in self._pending:
                future.set_exception(
                    TransportError(f"request id {request_id} is already in flight")
                )
                continue
            now = time.perf_counter()
            pending = _Pending(frames, future, now, timeout_s, retries, first_sent=now)
            self._pending[request_id] = pending
            self._transmit(pending, now)
            self.stats.sent += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, len(self._pending))

    def _transmit(self, pending: _Pending, now: float) -> None:
        """Hand the request to ZeroMQ; if it cannot take it (no daemon connected, or the queue
        towards one full), try again soon without counting an attempt."""
        try:
            send_frames(self._sock, pending.frames, zmq.NOBLOCK)
        except zmq.Again:
            pending.queued = False
            pending.deadline = now + UNQUEUED_RETRY_S
            return
        pending.queued = True
        pending.deadline = now + pending.timeout_s

    def _receive(self) -> None:
        while self._sock.poll(0):
            frames = self._sock.recv_multipart(copy=True)
            try:
                reply = unpack_reply(frames)
            except ProtocolError as exc:
                self.stats.malformed += 1
                log.warning("dropping malformed reply: %s", exc)
                continue
            pending = self._pending.get(reply.id)
            if pending is None:
                self.stats.duplicates += 1  # late answer to a resent request
                continue
            if reply.code in ErrorCode.RETRYABLE and pending.attempts <= pending.retries:
                # resent by _resend_expired once this short back-off has passed
                pending.deadline = time.perf_counter() + min(0.05 * pending.attempts, 1.0)
                continue
            del self._pending[reply.id]
            reply.timings["rtt_ms"] = (time.perf_counter() - pending.first_sent) * 1000.0
            reply.attempts = pending.attempts
            self.stats.replies += 1
            pending.future.set_result(reply)

    def _resend_expired(self) -> None:
        now = time.perf_counter()
        for request_id, pending in list(self._pending.items()):
            if pending.deadline > now:
                continue
            waited = now - pending.first_sent
            given_up = (
                pending.attempts > pending.retries
                if pending.queued
                else waited > pending.timeout_s * (pending.retries + 1)
            )
            if given_up:
                del self._pending[request_id]
                self.stats.timeouts += 1
                what = (
                    f"after {pending.attempts} attempts of {pending.timeout_s:g} s"
                    if pending.queued
                    else f"in {waited:.1f} s: no daemon connected"
                )
                pending.future.set_exception(
                    TransportError(f"no reply from {self.endpoint} for request {request_id} {what}")
                )
                continue
            if pending.queued:
                pending.attempts += 1
                self.stats.resent += 1
            self._transmit(pending, now)

    def _fail_all(self, exc: TransportError) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(exc)
        self._pending.clear()
        while True:
            try:
                _id, _frames, future, _policy = self._outbox.get_nowait()
            except queue.Empty:
                return
            future.set_exception(exc)
