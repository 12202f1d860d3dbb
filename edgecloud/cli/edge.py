"""``edgecloud edge``: run the head on frames, send the features, print the cloud's answers."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections import deque
from typing import Any, Deque, Dict, Iterable, Iterator, List

from edgecloud.cli.common import write_json
from edgecloud.cli.options import (
    DEFAULT_ENDPOINT,
    ExtendNames,
    add_bad_images,
    add_codec,
    add_command,
    add_cut,
    add_data,
    add_head,
    add_limit,
    add_model,
    add_outputs,
    endpoints,
    nonnegative_int,
    positive_float,
    positive_int,
)

#: ``--refine`` without a codec: the model's recommended codec and its shipped coarse codec
RECOMMENDED = "recommended"
EPILOG = f"""\
examples:
  edgecloud edge --data photos/                    # daemon at {DEFAULT_ENDPOINT}, default cut
  edgecloud edge --connect tcp://10.0.0.2:5555 --data photos/ --cut blocks.3
  edgecloud edge --connect tcp://10.0.0.2:5555 --data clip.mp4 --jsonl results.jsonl
  edgecloud edge --connect tcp://10.0.0.2:5555 --data 0 --codec q8-ncc-zstd   # camera 0
  edgecloud edge --data clip.mp4 --stream          # frames coded against the previous one
  edgecloud edge --connect tcp://cloud-a:5555,tcp://cloud-b:5555 --data 0   # two daemons

On start the edge pings the daemon (--connect-timeout) and checks that it serves the model,
weights and cut and knows the codec's calibration; then it warms up (one blank image through
head and encoder) and streams. One line per frame (top-1 label, bytes sent, round trip);
--jsonl writes every result with per-stage timings (preprocess_ms, head_ms, encode_ms, rtt_ms,
decode_ms, queue_ms, tail_ms, server_ms). The final JSON line has counts and the median of each
stage over the frames. If the daemon stops answering, the run stops with one message. Codecs
that need a calibration use the preset shipped for the model, weights and cut
(edgecloud.presets) unless --codec-calibration is given. A learned codec (--codec learned-NAME
--codec-calibration NAME.npz, from `edgecloud train-codec`) runs its encoder in the head's graph:
with --backend onnxruntime or tensorrt the head (fp32 or --int8) and the encoder are one ONNX
graph or engine, and head_ms includes the encoder. Video files and cameras need OpenCV
(pip install 'edgecloud[video]').
"""

SUMMARY_STAGES = (
    "preprocess_ms",
    "head_ms",
    "encode_ms",
    "rtt_ms",
    "decode_ms",
    "queue_ms",
    "tail_ms",
)


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "edge",
        help="run the edge runtime (head + codec) against a cloud daemon",
        description="Edge runtime: preprocess each frame, run the head, encode the feature, "
        "send it to `edgecloud serve` and print the answers. Pipelined: the head works on the "
        "next frame while earlier ones are on the wire.",
        epilog=EPILOG,
    )
    p.add_argument(
        "--connect",
        type=endpoints,
        action=ExtendNames,
        default=None,
        metavar="ENDPOINT[,ENDPOINT]",
        help=f"daemon endpoint (default {DEFAULT_ENDPOINT}); repeatable: requests are spread "
        "across the daemons and resent to another when one dies (a --stream stays on one)",
    )
    p.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=5.0,
        help="seconds to wait for the daemon at start (default 5)",
    )
    add_data(
        p,
        default=None,
        old=["--source"],
        help="frames: image folder, image file, video file or camera index (required)",
    )
    add_limit(p)
    add_bad_images(p)
    add_model(p)
    add_cut(p)
    add_codec(
        p,
        help="feature codec spec (default: the model's recommended codec at the cut); with "
        "--adapt a comma-separated ladder, most bytes first",
    )
    p.add_argument(
        "--codec-calibration",
        default=None,
        metavar="FILE",
        help="codec calibration file (default: the shipped preset for model, cut and codec)",
    )
    add_head(p)
    p.add_argument("--window", type=positive_int, default=4, help="frames in flight (default 4)")
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=10.0,
        help="seconds without a reply before a frame is resent (default 10)",
    )
    p.add_argument(
        "--retries", type=nonnegative_int, default=3, help="resends per frame (default 3)"
    )
    p.add_argument("--top-k", type=positive_int, default=5, help="labels per answer (default 5)")
    p.add_argument(
        "--stream",
        action="store_true",
        help="code the frames as one stream, each against the previous decoded one "
        "(a video or camera; the codec must be a stream codec, e.g. q4-ncc-crans-s2.5-pt or "
        "q8-ct-h264-qp28-p99.9-pt with --codec-calibration); a frame the daemon cannot decode "
        "for want of its reference is sent again after a keyframe",
    )
    p.add_argument(
        "--keyframe-interval",
        type=positive_int,
        default=30,
        help="with --stream: a keyframe every N frames (default 30)",
    )
    p.add_argument(
        "--adapt",
        type=positive_float,
        default=None,
        metavar="MS",
        help="keep each frame's latency (head + encode + round trip) under MS: the codec is "
        "chosen per frame from the --codec ladder (default q8-ncc-zstd,q4-ncc-zstd,<the "
        "recommended codec>), stepping down when the link slows and up when it recovers",
    )
    p.add_argument(
        "--refine",
        nargs="?",
        const=RECOMMENDED,
        default=None,
        metavar="CODEC",
        help="resend a frame the cloud is unsure of (top-1 score less the second below "
        "--refine-below) with this finer codec, and answer with that; without CODEC: the "
        "model's recommended codec, and --codec defaults to the coarse one shipped for it "
        "(at blocks: q4-ncc-crans-s3.5-pt first, q4-ncc-crans-s2.5-pt for unsure frames)",
    )
    p.add_argument(
        "--refine-below",
        type=positive_float,
        default=0.05,
        metavar="MARGIN",
        help="with --refine: the score margin below which a frame is resent (default 0.05)",
    )
    p.add_argument(
        "--refine-calibration",
        default=None,
        metavar="FILE",
        help="with --refine: its codec's calibration file (default: the shipped preset)",
    )
    p.add_argument(
        "--fps",
        type=positive_float,
        default=None,
        help="send at most this many frames per second (a camera's pace; default: as fast as "
        "the window allows)",
    )
    p.add_argument("--curve-secret", default=None, help="CurveZMQ: this edge's .key_secret")
    p.add_argument("--curve-server-key", default=None, help="CurveZMQ: the daemon's .key")
    add_outputs(p, jsonl=True)
    p.set_defaults(func=run)


class RunningSummary:
    """Counts, mean bytes, frames per codec and the median of each per-stage timing, over a
    run of any length (an edge on a camera runs for days): medians over the last
    ``window`` answered frames."""

    def __init__(self, window: int = 10_000) -> None:
        self.frames = 0
        self.errors = 0
        self._bytes = 0
        self._codecs: Dict[str, int] = {}
        self._timings: Dict[str, Deque[float]] = {s: deque(maxlen=window) for s in SUMMARY_STAGES}

    def add(self, record: Dict[str, Any]) -> None:
        self.frames += 1
        if record["status"] != "ok":
            self.errors += 1
            return
        self._bytes += record["bytes"]
        rung = f"{record['cut']}:{record['codec']}"
        self._codecs[rung] = self._codecs.get(rung, 0) + 1
        for stage, values in self._timings.items():
            if stage in record:
                values.append(record[stage])

    def summary(self) -> Dict[str, Any]:
        import numpy as np

        ok = self.frames - self.errors
        out: Dict[str, Any] = {"images": self.frames, "ok": ok, "errors": self.errors}
        if ok:
            out["bytes_per_image"] = round(self._bytes / ok, 1)
            if len(self._codecs) > 1:  # adaptation: frames per CUT:CODEC
                out["frames_per_codec"] = dict(self._codecs)
            for stage, values in self._timings.items():
                if values:
                    out[f"{stage[:-3]}_p50_ms"] = round(float(np.median(values)), 3)
        return out


def paced(frames: Iterable[Any], fps: float) -> Iterator[Any]:
    """``frames`` at most ``fps`` per second (on a schedule: a late frame does not delay the
    next ones further)."""
    period, start = 1.0 / fps, time.perf_counter()
    for i, frame in enumerate(frames):
        time.sleep(max(0.0, start + i * period - time.perf_counter()))
        yield frame


def run(args: argparse.Namespace) -> int:
    from edgecloud.cli.options import head_runner, model_name, names
    from edgecloud.codec import LearnedCodec
    from edgecloud.edge import AdaptConfig, EdgeClient, RefineConfig, iter_frames
    from edgecloud.edge.client import parse_rung, probe_daemons
    from edgecloud.errors import ConfigError
    from edgecloud.models import load_model
    from edgecloud.models.record import FALLBACK_CODEC
    from edgecloud.partition import resolve_cut
    from edgecloud.transport import SocketOptions

    if args.data is None:
        raise ConfigError("--data is required: an image folder, image file, video or camera index")
    options = SocketOptions(
        curve_secret_file=args.curve_secret, curve_server_key_file=args.curve_server_key
    )
    connect = args.connect or [DEFAULT_ENDPOINT]
    infos = probe_daemons(connect, args.connect_timeout, options)  # before loading anything
    spec = load_model(model_name(args), weights=args.weights)
    cut = resolve_cut(spec, args.cut)
    calibration = None
    if args.codec_calibration:
        from edgecloud.codec import load_calibration_file

        calibration = load_calibration_file(args.codec_calibration)
    ladder = names(args.codec) if args.codec else []
    if args.adapt is None and (len(ladder) > 1 or ":" in (args.codec or "")):
        raise ConfigError(
            f"--codec {args.codec}: a ladder (several codecs, CUT:CODEC) needs --adapt"
        )
    adapt = AdaptConfig(args.adapt) if args.adapt is not None else None
    refine = None
    if args.refine:
        if args.refine == RECOMMENDED:
            args.refine = spec.record.codec_for(cut) if spec.record else FALLBACK_CODEC
            if not ladder:
                coarse = spec.record.refine_codecs.get(cut) if spec.record else None
                if coarse is None:
                    raise ConfigError(
                        f"no coarse codec ships for resending at {spec.name} cut {cut}: "
                        "give --codec COARSE (and --codec-calibration) with --refine"
                    )
                ladder = [coarse]
        refine_calibration = None
        if args.refine_calibration:
            from edgecloud.codec import load_calibration_file

            refine_calibration = load_calibration_file(args.refine_calibration)
        refine = RefineConfig(args.refine, args.refine_below, refine_calibration)
    elif args.refine_calibration:
        raise ConfigError("--refine-calibration applies with --refine CODEC")
    cut, codec = parse_rung(ladder[0], cut) if ladder else (cut, None)  # the first rung
    if adapt is None and isinstance(calibration, LearnedCodec):
        # the learned encoder runs in the head's graph (ONNX Runtime, TensorRT or torch)
        heads = {cut: head_runner(args, spec, cut, encoder=calibration)}
    else:
        heads = {c: head_runner(args, spec, c) for c in {parse_rung(e, cut)[0] for e in ladder}}
    head = heads.get(cut) or head_runner(args, spec, cut)
    skipped: List[str] = []
    running = RunningSummary()
    stopped = ""
    sink = open(args.jsonl, "w") if args.jsonl else None  # noqa: SIM115 - closed below
    try:
        with EdgeClient(
            connect,
            spec=spec,
            cut=cut,
            codec=codec,
            head=head,
            calibration=calibration,
            window=args.window,
            timeout_s=args.timeout,
            retries=args.retries,
            top_k=args.top_k,
            options=options,
            stream_id=f"{socket.gethostname()}-{os.getpid()}" if args.stream else None,
            keyframe_interval=args.keyframe_interval,
            adapt=adapt,
            ladder=ladder if adapt else None,
            heads=heads,
            refine=refine,
        ) as edge:
            edge.check(infos)
            edge.warm_up()
            graph = "head + learned encoder" if head.encoder is not None else "head"
            resend = (
                f", unsure answers resent as {refine.codec} (margin {refine.below:g})"
                if refine
                else ""
            )
            print(
                f"edge: {spec.name} cut {cut} codec {edge.codec_spec}{resend} "
                f"({args.backend} {graph}) -> {', '.join(edge.endpoints)}",
                file=sys.stderr,
            )
            frames = iter_frames(
                args.data, args.limit, skipped if args.on_bad_image == "skip" else None
            )
            if args.fps:
                frames = paced(frames, args.fps)
            try:
                for result in edge.stream(frames):
                    if result.code == "no_reply":  # the daemon is gone: say so once and stop
                        stopped = result.message
                        break
                    record = result.to_dict()
                    running.add(record)
                    if sink:
                        sink.write(json.dumps(record) + "\n")
                        sink.flush()
                    if result.ok:
                        print(
                            f"{result.name}  {result.labels[0]} ({result.scores[0]:.2f})  "
                            f"{result.bytes_sent} B  rtt {result.timings['rtt_ms']:.1f} ms"
                            + ("  (resent finer)" if result.refined else "")
                        )
                    else:
                        print(
                            f"{result.name}  ERROR {result.code}: {result.message}",
                            file=sys.stderr,
                        )
            except KeyboardInterrupt:
                stopped = "interrupted"
    finally:
        if sink:
            sink.close()
    summary = running.summary()
    summary.update(
        model=spec.name,
        cut=cut,
        codec=edge.codec_spec,
        backend=args.backend,
        int8=args.int8,
        skipped_images=len(skipped),
    )
    if stopped == "interrupted":
        summary["stopped"] = stopped
        written = f"; their records are in {args.jsonl}" if args.jsonl else ""
        print(
            f"edgecloud edge: interrupted after {running.frames} frames{written}", file=sys.stderr
        )
    elif stopped:
        summary["stopped"] = stopped
        print(
            f"edgecloud edge: error: the daemon at {', '.join(edge.endpoints)} stopped answering "
            f"after {running.frames} frames ({stopped})",
            file=sys.stderr,
        )
    print(json.dumps(summary))
    write_json(args.json_path, summary)
    return 0 if running.frames and running.errors == 0 and not stopped else 1
