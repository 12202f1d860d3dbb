"""ZeroMQ socket set-up shared by the edge DEALER and the cloud ROUTER."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import zmq

from edgecloud.errors import ConfigError
from edgecloud.transport.security import secure_client, secure_server

#: payloads at least this large are sent without copying (below it copying is faster)
ZERO_COPY_BYTES = 64 * 1024


@dataclass
class SocketOptions:
    """Transport settings; ``max_message_bytes`` becomes ``ZMQ_MAXMSGSIZE``."""

    max_message_bytes: int = 16 * 1024 * 1024
    heartbeat_ivl_ms: int = 1000  # DEALER only (see make_router)
    heartbeat_timeout_ms: int = 5000
    keepalive_idle_s: int = 10  # ROUTER: TCP keepalive finds dead peers (no heartbeats)
    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 2000
    hwm: int = 1000  # send high-water mark (messages)
    router_rcvhwm: int = 256  # ROUTER: unread messages per peer before TCP pushes back
    linger_ms: int = 0
    #: CurveZMQ: own key pair (``.key_secret``); clients also need the server's public ``.key``
    curve_secret_file: Optional[str] = None
    curve_server_key_file: Optional[str] = None


def _common(sock: zmq.Socket, opts: SocketOptions) -> None:
    sock.setsockopt(zmq.MAXMSGSIZE, int(opts.max_message_bytes))
    sock.setsockopt(zmq.SNDHWM, opts.hwm)
    sock.setsockopt(zmq.LINGER, opts.linger_ms)


def make_router(
    context: zmq.Context, endpoint: str, opts: Optional[SocketOptions] = None
) -> zmq.Socket:
    """Bound ROUTER with ``ROUTER_MANDATORY`` (replies to vanished peers raise, not vanish).

    A receive high-water mark per peer (``router_rcvhwm``) makes a flooding peer wait for TCP
    instead of being buffered (an unbounded pipe costs ~28 KB of RSS per unread message).
    **No ZMTP heartbeats and no** ``ROUTER_HANDOVER``: libzmq 4.3.x (to its current master)
    aborts the whole process with ``Assertion failed: !_io_error
    (src/stream_engine_base.cpp:310)`` (libzmq issues #3937, #4364, #4767) when a peer resets
    its connection while its engine has stopped reading (its pipe is full) and the engine then
    writes: a heartbeat of its own (the path ordinary clients hit) or the PONG to a PING still
    in its buffer. TCP keepalive finds dead peers instead. A hand-written client that puts
    PINGs behind a flood can still reach the second path: see ``deploy/libzmq``.
    """
    opts = opts or SocketOptions()
    sock = context.socket(zmq.ROUTER)
    try:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        _common(sock, opts)
        sock.setsockopt(zmq.RCVHWM, opts.router_rcvhwm)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 0)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, opts.keepalive_idle_s)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, max(1, opts.keepalive_idle_s // 2))
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 3)
        if opts.curve_secret_file:
            secure_server(sock, opts.curve_secret_file)
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        sock.close(0)
        raise ConfigError(f"cannot bind {endpoint!r}: {exc}") from None
    except BaseException:
        sock.close(0)
        raise
    return sock


def endpoint_list(endpoint: Union[str, Sequence[str]]) -> List[str]:
    """One endpoint or several, as a list."""
    return [endpoint] if isinstance(endpoint, str) else list(endpoint)


def make_dealer(
    context: zmq.Context,
    endpoint: Union[str, Sequence[str]],
    opts: Optional[SocketOptions] = None,
) -> zmq.Socket:
    """Connected DEALER that reconnects with exponential back-off up to ``reconnect_ivl_max_ms``.

    Several endpoints (daemons): ZeroMQ round-robins the requests across them, and with
    ``ZMQ_IMMEDIATE`` only across daemons it is connected to, so a dead daemon's share goes to
    the others (what was already queued towards it is resent by the client's timeout). One
    endpoint: requests wait in its queue while the daemon restarts.

    ZMTP heartbeats detect a dead daemon. The receive pipe is unbounded, so the engine never
    stops reading (the libzmq abort described in :func:`make_router` needs a stopped reader);
    what arrives is bounded by the client's own window of requests in flight.
    """
    opts = opts or SocketOptions()
    endpoints = endpoint_list(endpoint)
    target = endpoints[0]
    sock = context.socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.RECONNECT_IVL, opts.reconnect_ivl_ms)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, opts.reconnect_ivl_max_ms)
        _common(sock, opts)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.HEARTBEAT_IVL, opts.heartbeat_ivl_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, opts.heartbeat_timeout_ms)
        sock.setsockopt(zmq.HEARTBEAT_TTL, opts.heartbeat_timeout_ms)
        if len(endpoints) > 1:
            sock.setsockopt(zmq.IMMEDIATE, 1)
        if opts.curve_secret_file or opts.curve_server_key_file:
            if not (opts.curve_secret_file and opts.curve_server_key_file):
                raise ConfigError("CURVE clients need their .key_secret and the server's .key")
            secure_client(sock, opts.curve_secret_file, opts.curve_server_key_file)
        for target in endpoints:
            sock.connect(target)
    except zmq.ZMQError as exc:
        sock.close(0)
        raise ConfigError(f"cannot connect to {target!r}: {exc}") from None
    except BaseException:
        sock.close(0)
        raise
    return sock


def bound_endpoint(sock: zmq.Socket) -> str:
    """The endpoint a socket actually bound (resolves ``tcp://host:0`` / ``:*`` to the port)."""
    value = sock.getsockopt(zmq.LAST_ENDPOINT)
    return value.decode() if isinstance(value, bytes) else str(value)


_SNDMORE = int(zmq.SNDMORE)


def send_frames(sock: zmq.Socket, frames: list, flags: int = 0) -> None:
    """Multipart send; large frames go zero-copy."""
    flags = int(flags)  # pyzmq's flags are enums: combining them costs more than the send
    more = flags | _SNDMORE
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        sock.send(frame, more if i < last else flags, copy=len(frame) < ZERO_COPY_BYTES)
