"""ZeroMQ wire protocol and the edge-side client (edge DEALER <-> cloud ROUTER)."""

from __future__ import annotations

from edgecloud.transport.client import FeatureClient
from edgecloud.transport.protocol import (
    PROTOCOL_VERSION,
    BadRequest,
    ErrorCode,
    Reply,
    Request,
    pack_reply,
    pack_request,
    unpack_reply,
    unpack_request,
)
from edgecloud.transport.sockets import SocketOptions, bound_endpoint, make_dealer, make_router

__all__ = [
    "PROTOCOL_VERSION",
    "BadRequest",
    "ErrorCode",
    "FeatureClient",
    "Reply",
    "Request",
    "SocketOptions",
    "bound_endpoint",
    "make_dealer",
    "make_router",
    "pack_reply",
    "pack_request",
    "unpack_reply",
    "unpack_request",
]
