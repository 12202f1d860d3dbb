"""Wire format of edgecloud requests and replies (version 1).

A request is a ZeroMQ multipart message from an edge DEALER::

    frame 0  header   UTF-8 JSON object (at most MAX_HEADER_BYTES), see :class:`Request`
    frame 1  payload  the feature bitstream (``kind == "infer"`` only)

A reply from the cloud ROUTER::

    frame 0  header   UTF-8 JSON object, see :class:`Reply`
    frame 1  tensor   raw little-endian float32 output (only when ``output == "tensor"``)

JSON only: nothing received from the network is ever unpickled.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import orjson

from edgecloud.errors import ProtocolError

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 4096
KINDS = ("infer", "ping", "stats")
OUTPUTS = ("topk", "tensor")
MAX_TOP_K = 1000
#: a header is a flat object: more brackets than this is refused before the JSON parser runs
MAX_BRACKETS = 16
MAX_FRAMES = 2


class ErrorCode:
    """Reply status codes (``Reply.code``)."""

    OK = "ok"
    MALFORMED = "malformed_header"
    VERSION = "unsupported_version"
    UNKNOWN_MODEL = "unknown_model"
    UNKNOWN_CUT = "unknown_cut"
    WEIGHTS_MISMATCH = "weights_mismatch"
    BAD_BITSTREAM = "corrupt_bitstream"
    SHAPE_MISMATCH = "shape_mismatch"
    TOO_LARGE = "too_large"
    QUEUE_FULL = "queue_full"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL = "internal_error"
    NEED_KEYFRAME = "need_keyframe"  # a stream frame whose reference the daemon lacks
    TOO_MANY_STREAMS = "too_many_streams"
    EXECUTOR_UNAVAILABLE = "executor_unavailable"  # the tail's executor (Triton) is down

    #: codes after which resending the same request later can succeed (maybe elsewhere)
    RETRYABLE = frozenset({QUEUE_FULL, RATE_LIMITED, SHUTTING_DOWN, EXECUTOR_UNAVAILABLE})


class BadRequest(ProtocolError):
    """A request the daemon rejects; ``code`` is the :class:`ErrorCode` of the error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Request:
    """Header of an edge request."""

    model: str = ""
    weights_id: str = ""
    cut: str = ""
    codec: str = ""
    kind: str = "infer"
    id: str = field(default_factory=new_request_id)
    output: str = "topk"
    top_k: int = 5
    sent_at: float = 0.0  # edge wall clock (unix seconds) of the first send
    v: int = PROTOCOL_VERSION


@dataclass
class Reply:
    """Header of a cloud reply (plus the decoded output tensor, if any)."""

    id: str
    status: str = "ok"  # "ok" | "error"
    code: str = ErrorCode.OK
    message: str = ""
    indices: List[int] = field(default_factory=list)
    labels: List[str] = field(default_factory=list)
    scores: List[float] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)  # ping/stats answers
    tensor_shape: Optional[List[int]] = None
    cached: bool = False
    v: int = PROTOCOL_VERSION
    tensor: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    attempts: int = field(default=1, compare=False)  # edge-side: sends it took (not on the wire)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def error(cls, request_id: str, code: str, message: str) -> Reply:
        return cls(id=request_id, status="error", code=code, message=message)


_REQUEST_TYPES = {
    "model": str,
    "weights_id": str,
    "cut": str,
    "codec": str,
    "kind": str,
    "id": str,
    "output": str,
    "top_k": int,
    "sent_at": (int, float),
    "v": int,
}
_REQUEST_KEYS = frozenset(_REQUEST_TYPES)


def _load_json(frame: bytes, what: str) -> Dict[str, Any]:
    if len(frame) > MAX_HEADER_BYTES:
        raise BadRequest(
            ErrorCode.MALFORMED, f"{what} header is {len(frame)} bytes (max {MAX_HEADER_BYTES})"
        )
    raw = bytes(frame)
    if raw.count(b"[") + raw.count(b"{") > MAX_BRACKETS:
        raise BadRequest(ErrorCode.MALFORMED, f"{what} header is nested too deeply")
    try:
        obj = orjson.loads(raw)  # validates UTF-8; NaN and Infinity are not JSON
    except orjson.JSONDecodeError as exc:
        raise BadRequest(ErrorCode.MALFORMED, f"{what} header is not UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BadRequest(
            ErrorCode.MALFORMED, f"{what} header is a JSON {type(obj).__name__}, not an object"
        )
    return obj


def _dump_json(obj: Dict[str, Any]) -> bytes:
    """Compact JSON; ``ValueError`` for a non-finite number, ``TypeError`` for a value JSON
    cannot hold."""
    try:
        data = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        data = b"null"
    if b"null" in data:  # orjson writes NaN and Infinity as null: the standard library
        # refuses them (and writes what orjson cannot, e.g. integer keys, or names the type)
        text = json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_numpy_scalar)
        return text.encode("utf-8")
    return data


def _numpy_scalar(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def pack_request(request: Request, payload: bytes = b"") -> List[bytes]:
    """Frames of a request (header, and the payload for ``infer``)."""
    if not request.sent_at:
        request.sent_at = time.time()
    header = _dump_json(asdict(request))
    return [header, payload] if request.kind == "infer" else [header]


def unpack_request(frames: Sequence[Any]) -> Tuple[Request, Any]:
    """Validate the frames of a request; returns the header and the payload frame.

    Raises :class:`BadRequest` (with ``.code``) naming the problem.
    """
    if not frames:
        raise BadRequest(ErrorCode.MALFORMED, "empty message")
    if len(frames) > MAX_FRAMES:
        raise BadRequest(ErrorCode.MALFORMED, f"request has {len(frames)} frames (at most 2)")
    obj = _load_json(frames[0], "request")
    version = obj.get("v")
    if version != PROTOCOL_VERSION:
        raise BadRequest(
            ErrorCode.VERSION,
            f"protocol version {version!r} (this daemon speaks {PROTOCOL_VERSION})",
        )
    if not _REQUEST_KEYS.issuperset(obj):
        unknown = sorted(set(obj) - _REQUEST_KEYS)
        raise BadRequest(ErrorCode.MALFORMED, f"unknown header fields {unknown}")
    for key, value in obj.items():
        if not isinstance(value, _REQUEST_TYPES[key]) or isinstance(value, bool):
            raise BadRequest(ErrorCode.MALFORMED, f"header field {key!r} has a wrong type")
    request = Request(**obj)
    if not request.id or len(request.id) > 64:
        raise BadRequest(ErrorCode.MALFORMED, "request id missing or longer than 64 chars")
    if request.kind not in KINDS:
        raise BadRequest(ErrorCode.MALFORMED, f"unknown kind {request.kind!r}")
    if request.kind != "infer":
        if len(frames) != 1:
            raise BadRequest(ErrorCode.MALFORMED, f"{request.kind} takes 1 frame")
        return request, b""
    if len(frames) != 2:
        raise BadRequest(ErrorCode.MALFORMED, f"infer takes 2 frames, got {len(frames)}")
    if request.output not in OUTPUTS:
        raise BadRequest(ErrorCode.MALFORMED, f"output must be one of {OUTPUTS}")
    if not 1 <= request.top_k <= MAX_TOP_K:
        raise BadRequest(ErrorCode.MALFORMED, f"top_k must be in 1..{MAX_TOP_K}")
    for key in ("model", "cut", "codec"):
        if not getattr(request, key):
            raise BadRequest(ErrorCode.MALFORMED, f"header field {key!r} is empty")
    return request, frames[1]


def request_id_of(frames: Sequence[Any]) -> str:
    """Best-effort request id of a (possibly malformed) request, for the error reply."""
    try:
        raw = bytes(frames[0])
        if len(raw) > MAX_HEADER_BYTES or raw.count(b"[") + raw.count(b"{") > MAX_BRACKETS:
            return ""
        value = orjson.loads(raw).get("id", "")
        return value if isinstance(value, str) and len(value) <= 64 else ""
    except Exception:  # any malformed header: no id to answer with
        return ""


def pack_reply(reply: Reply) -> List[bytes]:
    """Frames of a reply; a float32 output tensor travels raw in a second frame.

    The header holds ``v``, ``id``, ``status``, ``code`` and every other field that is not
    empty (absent fields take their defaults when unpacked)."""
    header: Dict[str, Any] = {
        "v": reply.v,
        "id": reply.id,
        "status": reply.status,
        "code": reply.code,
    }
    for key in _OPTIONAL_REPLY_FIELDS:
        value = getattr(reply, key)
        if value:
            header[key] = value
    if reply.tensor is not None:
        tensor = np.ascontiguousarray(reply.tensor, dtype="<f4")
        header["tensor_shape"] = list(tensor.shape)
        return [_dump_json(header), tensor.tobytes()]
    return [_dump_json(header)]


_OPTIONAL_REPLY_FIELDS = ("message", "indices", "labels", "scores", "timings", "info", "cached")


def unpack_reply(frames: Sequence[Any]) -> Reply:
    """Parse a reply; raises :class:`ProtocolError` on a malformed one."""
    if not frames:
        raise ProtocolError("empty reply")
    obj = _load_json(frames[0], "reply")
    if obj.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"reply protocol version {obj.get('v')!r}")
    obj.pop("attempts", None)
    try:
        reply = Reply(**obj)
    except TypeError as exc:
        raise ProtocolError(f"malformed reply header: {exc}") from None
    if reply.tensor_shape is not None:
        if len(frames) != 2:
            raise ProtocolError("reply announces a tensor but has no tensor frame")
        count = int(np.prod(reply.tensor_shape))
        data = bytes(frames[1])
        if len(data) != 4 * count:
            raise ProtocolError(f"tensor frame is {len(data)} bytes, expected {4 * count}")
        reply.tensor = np.frombuffer(data, dtype="<f4").reshape(reply.tensor_shape)
    return reply
