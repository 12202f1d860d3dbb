"""``EdgeClient``: preprocess -> head -> encode -> send -> receive, pipelined.

>>> with EdgeClient("tcp://127.0.0.1:5555", cut="blocks.4", codec="q8-ncc-zstd") as edge:
...     edge.connect()                                       # fails fast if nothing answers
...     result = edge.predict("cat.jpg")
...     print(result.labels[0], result.timings)
...     for result in edge.stream(iter_frames("photos/")):   # head of frame i+1 runs
...         print(result.to_dict())                           # while frame i is on the wire
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from edgecloud.codec.stream import StreamEncoder
from edgecloud.edge.adapt import AdaptConfig, RateController
from edgecloud.edge.refine import RefineConfig
from edgecloud.errors import CalibrationError, ConfigError, ServerError, TransportError
from edgecloud.models.record import DEFAULT_MODEL, FALLBACK_CODEC
from edgecloud.transport.client import FeatureClient
from edgecloud.transport.protocol import ErrorCode, Reply, Request
from edgecloud.transport.sockets import SocketOptions, endpoint_list

log = logging.getLogger(__name__)

ImageLike = Union[Image.Image, np.ndarray, str, Path]
CLOUD_TIMINGS = ("decode_ms", "queue_ms", "tail_ms", "server_ms", "batch_size")
#: a frame's latency as adaptation sees it
EDGE_LATENCY = ("preprocess_ms", "head_ms", "encode_ms", "rtt_ms")
#: times one frame is sent again as (or after) a keyframe before its result is the error
MAX_KEYFRAME_RESENDS = 3


@dataclass
class EdgeResult:
    """One frame's answer with its per-stage timings (edge and cloud)."""

    name: str
    request_id: str
    code: str
    message: str = ""
    indices: List[int] = field(default_factory=list)
    labels: List[str] = field(default_factory=list)
    scores: List[float] = field(default_factory=list)
    bytes_sent: int = 0
    attempts: int = 1
    timings: Dict[str, float] = field(default_factory=dict)
    tensor: Optional[np.ndarray] = field(default=None, repr=False)
    cut: str = ""  # where the frame was cut and ...
    codec: str = ""  # ... the codec it was sent with (both change with adaptation)
    refined: bool = False  # answered from a resend with the refine codec (bytes: both)

    @property
    def ok(self) -> bool:
        return self.code == "ok"

    def to_dict(self) -> Dict[str, Any]:
        """Flat JSON-ready record (one JSONL line)."""
        out: Dict[str, Any] = {
            "name": self.name,
            "id": self.request_id,
            "status": "ok" if self.ok else "error",
            "code": self.code,
        }
        if self.message:
            out["message"] = self.message
        if self.ok:
            out.update(
                top1_index=self.indices[0] if self.indices else None,
                top1_label=self.labels[0] if self.labels else None,
                top1_score=self.scores[0] if self.scores else None,
                indices=self.indices,
                labels=self.labels,
                scores=self.scores,
            )
        out["bytes"] = self.bytes_sent
        out["cut"] = self.cut
        out["codec"] = self.codec
        out["refined"] = self.refined
        out["attempts"] = self.attempts
        out.update({k: round(v, 3) for k, v in self.timings.items()})
        return out


def to_pil(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(image).convert("RGB")
    with Image.open(image) as img:
        return img.convert("RGB")


@dataclass
class Rung:
    """One way to send a frame: the head up to ``cut`` and the codec ``spec`` (a rung of the
    adaptation ladder; without adaptation the only one)."""

    cut: str
    spec: str
    codec: Any  # FeatureCodec
    head: Any  # head runner: run(batch) -> features (latents if built with an encoder)

    def __post_init__(self) -> None:
        encoder = getattr(self.head, "encoder", None)
        calibration = self.codec.calibration
        if encoder is not None and (calibration is None or calibration.hash != encoder.hash):
            raise ConfigError(
                f"the head runner at {self.cut} ends in learned codec {encoder.name}'s encoder: "
                f"it needs --codec {encoder.spec} with that codec's file, not {self.spec}"
            )

    def encode(self, output: np.ndarray) -> bytes:
        """The bitstream of the head's output (a feature, or a learned codec's latents)."""
        if getattr(self.head, "encoder", None) is not None:
            return self.codec.encode_latents(output)
        return self.codec.encode(output)


def parse_rung(text: str, default_cut: str) -> Tuple[str, str]:
    """``CODEC`` or ``CUT:CODEC`` (a ladder entry) as (cut, codec spec)."""
    cut, sep, spec = text.rpartition(":")
    return (cut if sep else default_cut), spec


class EdgeClient:
    """Edge runtime for one model and cut, talking to a ``CloudServer``.

    Args:
        endpoint: the daemon, e.g. ``tcp://10.0.0.2:5555``, or several daemons serving the
            same tails: requests are spread across them (ZeroMQ round-robin) and a resend may
            go to another one, so a dead daemon costs a timeout, not an answer. A stream
            stays on one of them (chosen from its id).
        model, cut, codec: what to run and how to encode the feature (default: the model's
            default cut and the codec its record recommends there).
        spec: an already loaded ``ModelSpec`` (otherwise ``load_model(model, weights)``).
        head: any object with ``run(batch: np.ndarray) -> np.ndarray``, e.g. from
            :func:`edgecloud.backends.create_head_runner` (default: the torch head).
        window: frames in flight (back-pressure beyond it); timeout_s/retries: resend policy.
        output: ``"topk"`` or ``"tensor"`` (also return the tail's logits).
        stream_id: code the frames as one stream (each against the previous one, see
            :mod:`edgecloud.codec.stream`; the codec must be a stream codec), with a keyframe
            every ``keyframe_interval`` frames. A frame the daemon answers ``need_keyframe``
            (it lost the reference: restarted, reconnected, a frame lost) is sent again, coded
            against a new keyframe; ``EdgeResult.attempts`` counts it.
        adapt: choose the codec per frame from ``ladder`` (``CODEC`` or ``CUT:CODEC``, most
            bytes first; default: :func:`default_ladder`) to keep each frame's latency under
            the target (see :mod:`edgecloud.edge.adapt`); ``EdgeResult.cut``/``codec`` say
            which was used. ``heads``: head runners of the ladder's other cuts (default: torch).
        refine: resend a frame whose answer is unsure (top-1 score less the second below
            ``refine.below``) with the finer ``refine.codec``, and answer with that
            (:mod:`edgecloud.edge.refine`); ``EdgeResult.refined`` says so, ``bytes_sent``
            counts both messages, ``timings["rtt_ms"]`` both round trips and
            ``timings["refine_rtt_ms"]`` the second alone.
    """

    def __init__(
        self,
        endpoint: Union[str, Sequence[str]],
        model: str = DEFAULT_MODEL,
        cut: Optional[str] = None,
        codec: Optional[str] = None,
        *,
        weights: Optional[str] = None,
        spec: Any = None,
        head: Any = None,
        calibration: Any = None,
        window: int = 4,
        timeout_s: float = 10.0,
        retries: int = 3,
        top_k: int = 5,
        output: str = "topk",
        options: Optional[SocketOptions] = None,
        stream_id: Optional[str] = None,
        keyframe_interval: int = 30,
        adapt: Optional[AdaptConfig] = None,
        ladder: Optional[Sequence[str]] = None,
        heads: Optional[Dict[str, Any]] = None,
        refine: Optional[RefineConfig] = None,
    ) -> None:
        from edgecloud.backends import create_head_runner
        from edgecloud.codec import FeatureCodec
        from edgecloud.models import load_model
        from edgecloud.partition import resolve_cut

        self.spec = spec if spec is not None else load_model(model, weights=weights)
        self.cut = cut = resolve_cut(self.spec, cut)
        if codec is None:
            codec = self.spec.record.codec_for(cut) if self.spec.record else FALLBACK_CODEC
        self.codec_spec = codec
        self.head = head if head is not None else create_head_runner("torch", self.spec, cut)
        if calibration is None:
            calibration = preset_for(self.spec, cut, codec)
        self.codec = FeatureCodec.from_spec(codec, calibration=calibration)
        self.stream_encoder: Optional[StreamEncoder] = None
        if stream_id is not None:
            self.stream_encoder = StreamEncoder(codec, calibration, stream_id, keyframe_interval)
        self.adapt: Optional[RateController] = None
        self.rungs = [Rung(cut, codec, self.codec, self.head)]
        if adapt is not None:
            if stream_id is not None:
                raise ConfigError("adaptation and streams do not combine (a stream has one codec)")
            entries = list(ladder) if ladder else default_ladder(self.spec, cut)
            self.adapt = RateController(entries, adapt)
            heads = {cut: self.head, **(heads or {})}
            self.rungs = []
            for entry in entries:
                rung_cut, spec = parse_rung(entry, cut)
                rung_cut = resolve_cut(self.spec, rung_cut)
                if rung_cut not in heads:
                    heads[rung_cut] = create_head_runner("torch", self.spec, rung_cut)
                rung_codec = (
                    self.codec
                    if (rung_cut, spec) == (cut, codec)
                    else FeatureCodec.from_spec(spec, preset_for(self.spec, rung_cut, spec))
                )
                self.rungs.append(Rung(rung_cut, spec, rung_codec, heads[rung_cut]))
        self.refine = refine
        self.refine_rung: Optional[Rung] = None
        if refine is not None:
            if stream_id is not None or adapt is not None:
                raise ConfigError(
                    "resending unsure frames does not combine with streams or --adapt"
                )
            if top_k < 2:
                raise ConfigError("resending unsure frames needs top_k >= 2 (the score margin)")
            fine_calibration = refine.calibration
            if fine_calibration is None:
                try:
                    fine_calibration = preset_for(self.spec, cut, refine.codec)
                except CalibrationError as exc:
                    raise CalibrationError(
                        f"--refine {refine.codec}: no preset ships for it at cut {cut!r}; give "
                        "its calibration (--refine-calibration FILE, made with `edgecloud sweep "
                        "--save-calibrations DIR`)"
                    ) from exc
            fine = FeatureCodec.from_spec(refine.codec, fine_calibration)
            self.refine_rung = Rung(cut, refine.codec, fine, self.head)
        self._encode_lock = threading.Lock()
        self._resender: Optional[ThreadPoolExecutor] = None
        self.top_k = top_k
        self.output = output
        self.endpoints = endpoint_list(endpoint)
        if stream_id is not None and len(self.endpoints) > 1:  # its references live there
            self.endpoints = [self.endpoints[zlib.crc32(stream_id.encode()) % len(self.endpoints)]]
        self._options = options
        self.client = FeatureClient(
            self.endpoints, window=window, timeout_s=timeout_s, retries=retries, options=options
        )

    # -- start-up -----------------------------------------------------------------------------

    def connect(self, timeout_s: float = 5.0) -> Dict[str, Any]:
        """Ping the daemon and check that it serves this model, weights and cut and knows the
        codec's calibration; returns its ``ping`` info.

        Raises :class:`TransportError` if nothing answers within ``timeout_s`` and
        :class:`ServerError` (code ``unknown_model``, ``unknown_cut``, ``weights_mismatch`` or
        ``corrupt_bitstream``) naming what the daemon serves instead.
        """
        if len(self.endpoints) == 1:
            infos = {self.endpoints[0]: ping_daemon(self.client, timeout_s)}
        else:
            infos = probe_daemons(self.endpoints, timeout_s, self._options)
        self.check(infos)
        return next(iter(infos.values()))

    def check(self, infos: Dict[str, Dict[str, Any]]) -> None:
        """Raise :class:`ServerError` unless every daemon's ``ping`` info (by endpoint) serves
        every rung: model, weights, cut and codec calibration."""
        for info in infos.values():
            for rung in self._all_rungs():
                check_served(info, self.spec, rung.cut, rung.codec)

    def _all_rungs(self) -> List[Rung]:
        return self.rungs + ([self.refine_rung] if self.refine_rung is not None else [])

    def warm_up(self) -> None:
        """Run preprocessing, heads and encoders once on a blank image (first calls are slow)."""
        side = self.spec.preprocessing.resize
        x = self.spec.preprocessing(Image.new("RGB", (side, side), (128, 128, 128))).numpy()
        for rung in self._all_rungs():
            rung.encode(np.asarray(rung.head.run(x[None]), dtype=np.float32)[0])

    # -- stages -------------------------------------------------------------------------------

    def prepare(self, image: ImageLike) -> Tuple[Request, bytes, Dict[str, float]]:
        """Preprocess, run the head and encode one image (in stream mode: the stream's next
        frame); returns the request, the bitstream and the edge timings."""
        timings, feature = self._head(image)
        t0 = time.perf_counter()
        with self._encode_lock:
            payload, _index = self._encode(feature)
        timings["encode_ms"] = (time.perf_counter() - t0) * 1000.0
        return self._request(), payload, timings

    def _head(self, image: ImageLike, head: Any = None) -> Tuple[Dict[str, float], np.ndarray]:
        t0 = time.perf_counter()
        x = self.spec.preprocessing(to_pil(image)).numpy()[None]
        t1 = time.perf_counter()
        feature = np.asarray((head or self.head).run(x), dtype=np.float32)[0]
        t2 = time.perf_counter()
        return {"preprocess_ms": (t1 - t0) * 1000.0, "head_ms": (t2 - t1) * 1000.0}, feature

    def _request(self, rung: Optional[Rung] = None) -> Request:
        rung = rung or self.rungs[0]
        return Request(
            model=self.spec.name,
            weights_id=self.spec.weights_id,
            cut=rung.cut,
            codec=rung.spec,
            output=self.output,
            top_k=self.top_k,
        )

    def _encode(self, feature: np.ndarray, after: int = -1) -> Tuple[bytes, int]:
        """The bitstream of ``feature`` and its frame index (-1 outside streams); in stream
        mode a keyframe first if none was coded since frame ``after``. Call under
        ``_encode_lock``, and send before releasing it: frames leave in the order coded."""
        if self.stream_encoder is None:
            return self.rungs[0].encode(feature), -1
        encoder = self.stream_encoder
        if after >= 0 and encoder.last_keyframe <= after:  # no keyframe since that frame
            encoder.request_keyframe()
        index = encoder.frame_index
        return encoder.encode(feature), index

    def submit(self, image: ImageLike, name: str = "") -> Future:
        """Prepare and send one image; the future resolves to an :class:`EdgeResult`. With
        adaptation the controller picks the rung (cut and codec) first, and hears how the
        frame fared."""
        choice = self.adapt.choose() if self.adapt is not None else (0, 0)
        timings, feature = self._head(image, self.rungs[choice[0]].head)
        outer: Future = Future()
        outer.set_running_or_notify_cancel()
        self._send(outer, name, timings, feature, after=-1, attempts=0, choice=choice)
        return outer

    def _send(
        self, outer, name, timings, feature, after: int, attempts: int, choice=(0, 0)
    ) -> None:
        """Encode and send (atomically, so that stream frames leave in order); a frame
        answered ``need_keyframe`` is sent again after a keyframe, from another thread."""
        index_of_rung, frame = choice
        rung = self.rungs[index_of_rung]
        request = self._request(rung)
        with self._encode_lock:
            t0 = time.perf_counter()
            if self.stream_encoder is None:
                payload, index = rung.encode(feature), -1
            else:
                payload, index = self._encode(feature, after)
            timings = {**timings, "encode_ms": (time.perf_counter() - t0) * 1000.0}
            inner = self.client.submit(request, payload)

        def done(f: Future) -> None:
            result = self._result(name, request.id, len(payload), timings, f)
            result.attempts += attempts
            result.cut, result.codec = rung.cut, rung.spec
            if self.adapt is not None and result.ok:
                latency = sum(result.timings.get(k, 0.0) for k in EDGE_LATENCY)
                link = result.timings.get("rtt_ms", 0.0) - result.timings.get("server_ms", 0.0)
                self.adapt.observe(index_of_rung, frame, len(payload), latency, link)
            if result.code == ErrorCode.NEED_KEYFRAME and attempts < MAX_KEYFRAME_RESENDS:
                self._in_background(outer, name, timings, self._resend, feature, index, attempts)
                return
            if self.refine is not None and result.ok and self.refine.unsure(result.scores):
                self._in_background(outer, name, timings, self._send_refined, feature, result)
                return
            outer.set_result(result)

        inner.add_done_callback(done)

    def _in_background(self, outer: Future, name: str, timings, call, *args) -> None:
        """``call(outer, name, timings, *args)`` off the client's I/O thread (which runs
        ``done``); if it fails (the client closed meanwhile) the frame is answered
        ``no_reply`` with its edge ``timings``."""
        if self._resender is None:
            self._resender = ThreadPoolExecutor(1, thread_name_prefix="edge-resend")

        def run() -> None:
            try:
                call(outer, name, timings, *args)
            except Exception as exc:  # do not hang the caller
                outer.set_result(EdgeResult(name, "", "no_reply", str(exc), timings=timings))

        self._resender.submit(run)

    def _resend(self, outer, name, timings, feature, index, attempts) -> None:
        self._send(outer, name, timings, feature, after=index, attempts=attempts + 1)

    def _send_refined(
        self, outer: Future, name: str, timings, feature: np.ndarray, first: EdgeResult
    ) -> None:
        """Send ``feature`` again with the refine codec; its answer is the frame's (with
        ``timings``, the first message's, added to)."""
        rung = self.refine_rung
        request = self._request(rung)
        t0 = time.perf_counter()
        payload = rung.encode(feature)
        encode_ms = (time.perf_counter() - t0) * 1000.0
        inner = self.client.submit(request, payload)

        def done(f: Future) -> None:
            result = self._result(name, request.id, len(payload), timings, f)
            result.refined = True
            result.cut, result.codec = rung.cut, rung.spec
            result.bytes_sent += first.bytes_sent
            result.attempts += first.attempts
            result.timings["refine_rtt_ms"] = result.timings.get("rtt_ms", 0.0)
            for key, extra in (("encode_ms", encode_ms), ("rtt_ms", first.timings["rtt_ms"])):
                result.timings[key] = result.timings.get(key, 0.0) + extra
            outer.set_result(result)

        inner.add_done_callback(done)

    def predict(self, image: ImageLike, name: str = "") -> EdgeResult:
        """Blocking round trip; raises :class:`ServerError` / :class:`TransportError`."""
        result = self.submit(image, name).result()
        if result.code == "no_reply":
            raise TransportError(result.message)
        if not result.ok:
            raise ServerError(result.code, result.message)
        return result

    def stream(self, frames: Iterable[Tuple[str, ImageLike]]) -> Iterator[EdgeResult]:
        """Results in frame order; the head of the next frame runs while earlier frames are on
        the wire (at most ``window`` in flight). Errors are results with ``ok == False``."""
        pending: Deque[Future] = deque()
        for name, image in frames:
            pending.append(self.submit(image, name))
            while pending and pending[0].done():
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        if self._resender is not None:
            self._resender.shutdown(wait=True)
        self.client.close()
        if self.stream_encoder is not None:
            self.stream_encoder.close()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _result(
        name: str, request_id: str, size: int, timings: Dict[str, float], future: Future
    ) -> EdgeResult:
        try:
            reply: Reply = future.result()
        except TransportError as exc:
            return EdgeResult(
                name, request_id, "no_reply", str(exc), bytes_sent=size, timings=timings
            )
        merged = dict(timings)
        merged["rtt_ms"] = reply.timings.get("rtt_ms", 0.0)
        merged.update({k: reply.timings[k] for k in CLOUD_TIMINGS if k in reply.timings})
        return EdgeResult(
            name,
            request_id,
            reply.code,
            reply.message,
            reply.indices,
            reply.labels,
            reply.scores,
            bytes_sent=size,
            attempts=reply.attempts,
            timings=merged,
            tensor=reply.tensor,
        )


def ping_daemon(client: FeatureClient, timeout_s: float) -> Dict[str, Any]:
    """The daemon's ``ping`` info; :class:`TransportError` saying what to do if none answers."""
    try:
        return client.ping(timeout_s=timeout_s, retries=0).info
    except TransportError:
        raise TransportError(
            f"no edgecloud daemon answers at {client.endpoint} (waited {timeout_s:g} s); start "
            f"one there with `edgecloud serve --bind {client.endpoint}`, or give another "
            "--connect endpoint"
        ) from None


def probe(
    endpoint: str, timeout_s: float = 5.0, options: Optional[SocketOptions] = None
) -> Dict[str, Any]:
    """Ping the daemon at ``endpoint`` once (see :func:`ping_daemon`)."""
    with FeatureClient(endpoint, options=options) as client:
        return ping_daemon(client, timeout_s)


def probe_daemons(
    endpoints: Sequence[str], timeout_s: float = 5.0, options: Optional[SocketOptions] = None
) -> Dict[str, Dict[str, Any]]:
    """Ping every daemon at once; the ``ping`` info of those that answer, by endpoint. Those
    that do not are logged (they join when they come up); :class:`TransportError` if none
    answers (for one endpoint: :func:`probe`'s, which says how to start it)."""
    if len(endpoints) == 1:
        return {endpoints[0]: probe(endpoints[0], timeout_s, options)}
    with ThreadPoolExecutor(len(endpoints)) as pool:
        futures = {e: pool.submit(probe, e, timeout_s, options) for e in endpoints}
    infos: Dict[str, Dict[str, Any]] = {}
    for endpoint_, future in futures.items():
        try:
            infos[endpoint_] = future.result()
        except TransportError:
            log.warning("no edgecloud daemon answers at %s (yet); continuing without it", endpoint_)
    if not infos:
        raise TransportError(
            f"no edgecloud daemon answers at any of {', '.join(endpoints)} (waited "
            f"{timeout_s:g} s); start one with `edgecloud serve --bind ENDPOINT`"
        )
    return infos


def check_served(info: Dict[str, Any], spec: Any, cut: str, codec: Any) -> None:
    """Raise :class:`ServerError` unless a daemon's ``ping`` info serves ``spec`` at ``cut`` and
    knows the calibration of ``codec`` (a FeatureCodec)."""
    models = info.get("models", {})
    if spec.name not in models:
        raise ServerError(
            "unknown_model", f"the daemon does not serve {spec.name} (it serves {sorted(models)})"
        )
    cuts = models[spec.name]
    if cut not in cuts:
        raise ServerError(
            "unknown_cut",
            f"the daemon serves {spec.name} at {sorted(cuts)}, not at cut {cut!r}: use one of "
            f"those with --cut, or start the daemon with `--cut {cut}`",
        )
    if cuts[cut].get("weights_id") != spec.weights_id:
        raise ServerError(
            "weights_mismatch",
            f"the daemon's {spec.name} weights are {cuts[cut].get('weights_id')}, this edge's "
            f"are {spec.weights_id}",
        )
    calibration = getattr(codec, "calibration", None)
    known = info.get("calibrations", {})
    if calibration is not None and calibration.id not in known:
        raise ServerError(
            "corrupt_bitstream",
            f"the daemon does not have codec calibration {calibration.id} ({calibration.spec}); "
            "give it the file with `edgecloud serve --codec-calibration FILE`",
        )


def default_ladder(spec: Any, cut: str) -> List[str]:
    """The rate ladder adaptation uses by default: 8-bit and 4-bit with zstd (no calibration),
    then the codec recommended at ``cut`` (about 13.6, 4.8 and 1.6 KB at Lite0's ``blocks``)."""
    recommended = spec.record.codec_for(cut) if spec.record else FALLBACK_CODEC
    return list(dict.fromkeys(["q8-ncc-zstd", "q4-ncc-zstd", recommended]))


def preset_for(spec: Any, cut: str, codec: str) -> Any:
    """The shipped calibration preset for a codec that needs one (None if it needs none);
    raises CalibrationError naming what to use instead."""
    from edgecloud.codec import parse_spec
    from edgecloud.presets import find_preset

    parsed = parse_spec(codec)
    if not parsed.needs_calibration:
        return None
    if parsed.kind == "learned":
        raise CalibrationError(
            f"codec {codec!r} is a learned codec: give its file (--codec-calibration "
            f"{parsed.name}.npz, made by `edgecloud train-codec`)"
        )
    preset = find_preset(spec.name, spec.weights_id, cut, codec)
    if preset is None:
        recommended = spec.record.codec_for(cut) if spec.record else FALLBACK_CODEC
        raise CalibrationError(
            f"codec {codec!r} needs a calibration and no preset ships for model {spec.name} "
            f"(weights {spec.weights_id}) at cut {cut!r}: use --codec {recommended} there, or "
            "give a calibration (--codec-calibration FILE, made with `edgecloud sweep "
            "--save-calibrations DIR`)"
        )
    return preset
