"""The daemon's front: the ROUTER socket, bounded receive, client identity, replies by route.

Only the I/O thread touches the ROUTER; other threads wake it through :meth:`Front.wake`
(an inproc PUSH/PULL pair, since ZeroMQ sockets are not thread-safe).

A client is identified by its CurveZMQ public key when CURVE is on (authenticated, and the
same across reconnects), else by the routing id libzmq gives its connection.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from dataclasses import dataclass
from typing import List, Optional, Set, Tuple, Union

import zmq

from edgecloud.transport.sockets import SocketOptions, bound_endpoint, make_router, send_frames

_instance_ids = itertools.count()


@dataclass
class Incoming:
    """One received message: who sent it and its frames (routing envelope removed)."""

    routing_id: bytes
    client: bytes  # fairness and reply-cache identity
    frames: List[zmq.Frame]
    size: int  # total bytes of the frames


class Front:
    def __init__(
        self,
        context: zmq.Context,
        endpoint: str,
        options: SocketOptions,
        *,
        curve: bool = False,
    ) -> None:
        self._ctx = context
        self._curve = curve
        self.router = make_router(context, endpoint, options)
        self.endpoint = bound_endpoint(self.router)
        wake_addr = f"inproc://edgecloud-front-{next(_instance_ids)}"
        self._wake_rx = context.socket(zmq.PULL)
        self._wake_rx.bind(wake_addr)
        self._wake_tx = context.socket(zmq.PUSH)
        self._wake_tx.connect(wake_addr)
        self._wake_lock = threading.Lock()
        self._poller = zmq.Poller()  # the ROUTER, wake-ups, watched sources
        self._poller.register(self.router, zmq.POLLIN)
        self._poller.register(self._wake_rx, zmq.POLLIN)
        self._poller_no_router = zmq.Poller()  # the same but the ROUTER (reading is paused)
        self._poller_no_router.register(self._wake_rx, zmq.POLLIN)

    def watch(self, source: Union[zmq.Socket, int]) -> None:
        """Also wake :meth:`poll` when ``source`` (a socket of this thread, or a file
        descriptor such as a process sentinel) becomes readable."""
        self._poller.register(source, zmq.POLLIN)
        self._poller_no_router.register(source, zmq.POLLIN)

    def unwatch(self, source: Union[zmq.Socket, int]) -> None:
        self._poller.unregister(source)
        self._poller_no_router.unregister(source)

    def poll(
        self, timeout_ms: int, *, read: bool = True
    ) -> Tuple[bool, Set[Union[zmq.Socket, int]]]:
        """Wait for a message (unless ``read`` is False: then messages wait in libzmq's
        queues, and a peer that keeps sending meets its high-water mark), a wake-up or a
        watched source: (messages waiting, the watched sources that are readable)."""
        poller = self._poller if read else self._poller_no_router
        events = dict(poller.poll(timeout_ms))
        if events.pop(self._wake_rx, None):
            while self._wake_rx.poll(0):
                self._wake_rx.recv()
        return events.pop(self.router, None) is not None, set(events)

    def receive(self) -> Optional[Incoming]:
        """The next message, or None if none is waiting."""
        try:
            frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        routing_id = frames[0].bytes
        body = frames[1:]
        client = routing_id
        if self._curve and body:
            with contextlib.suppress(zmq.ZMQError):  # set by the ZAP handler for CURVE peers
                client = b"curve:" + body[0].get("User-Id").encode()
        return Incoming(routing_id, client, body, sum(len(f) for f in body))

    def send(self, routing_id: bytes, frames: List[bytes]) -> Optional[str]:
        """Send without blocking; returns why it was dropped (``hwm``, ``peer_gone``) or None."""
        try:
            send_frames(self.router, [routing_id, *frames], zmq.NOBLOCK)
        except zmq.Again:
            return "hwm"
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            return "peer_gone"
        return None

    def wake(self) -> None:
        """Make :meth:`poll` return (thread-safe)."""
        # zmq.Again: wake-ups are already pending, or the I/O thread has finished
        with self._wake_lock, contextlib.suppress(zmq.Again):
            if not self._wake_tx.closed:
                self._wake_tx.send(b"", zmq.NOBLOCK)

    def close(self, linger_ms: int = 0) -> None:
        """Close the sockets; replies still queued are sent for up to ``linger_ms``."""
        with self._wake_lock:
            self._wake_tx.close(0)
        self._wake_rx.close(0)
        self.router.close(linger_ms)
