"""``edgecloud edge``: run the head on frames, send the features, print the cloud's answers."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List

from edgecloud.backends.options import add_backend_options
from edgecloud.cli.common import add_model_options, add_output_options

EPILOG = """\
examples:
  edgecloud edge --connect tcp://10.0.0.2:5555 --source photos/     # cut blocks, best codec
  edgecloud edge --connect tcp://10.0.0.2:5555 --source photos/ --cut blocks.4 --codec q8-ncc-zstd
  edgecloud edge --connect tcp://10.0.0.2:5555 --source clip.mp4 --jsonl results.jsonl
  edgecloud edge --connect tcp://10.0.0.2:5555 --source 0 --codec q8-ncc-zstd   # camera 0

Video files and cameras need OpenCV (pip install 'edgecloud[video]'). One line per frame
(top-1 label, bytes sent, round trip); --jsonl writes every result with per-stage timings
(preprocess_ms, head_ms, encode_ms, rtt_ms, decode_ms, queue_ms, tail_ms, server_ms).
Codecs that need a calibration use the preset shipped for the model, weights and cut
(edgecloud.presets) unless --codec-calibration is given.
"""

DEFAULT_CUT = "blocks"  # with DEFAULT_CODEC: 1.57 KB/image, -0.82 points top-1 (docs/codec.md)
DEFAULT_CODEC = "q4-ncc-crans-s2.5-pt"

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
    p = subparsers.add_parser(
        "edge",
        help="run the edge runtime (head + codec) against a cloud daemon",
        description="Edge runtime: preprocess each frame, run the head, encode the feature, "
        "send it to `edgecloud serve` and print the answers. Pipelined: the head works on the "
        "next frame while earlier ones are on the wire.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--connect", default="tcp://127.0.0.1:5555", help="daemon endpoint")
    p.add_argument(
        "--source", required=True, help="image folder, image file, video file or camera index"
    )
    p.add_argument("--limit", type=int, default=None, help="stop after N frames")
    add_model_options(p, cut=True)
    p.add_argument(
        "--codec",
        default=DEFAULT_CODEC,
        help=f"feature codec spec (default {DEFAULT_CODEC}, with --cut {DEFAULT_CUT})",
    )
    p.add_argument(
        "--codec-calibration",
        default=None,
        help="codec calibration file (default: the shipped preset for model, cut and codec)",
    )
    add_backend_options(p)
    p.add_argument("--window", type=int, default=4, help="frames in flight (default 4)")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds before a resend (default 10)"
    )
    p.add_argument("--retries", type=int, default=3, help="resends per frame (default 3)")
    p.add_argument("--top-k", type=int, default=5, help="labels per answer (default 5)")
    p.add_argument("--jsonl", default=None, help="write one JSON line per frame to PATH")
    p.add_argument("--curve-secret", default=None, help="CurveZMQ: this edge's .key_secret")
    p.add_argument("--curve-server-key", default=None, help="CurveZMQ: the daemon's .key")
    add_output_options(p)
    p.set_defaults(func=run)


def summarize(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Counts, mean bytes and median per-stage timings of edge results."""
    import numpy as np

    ok = [r for r in records if r["status"] == "ok"]
    out: Dict[str, Any] = {"images": len(records), "ok": len(ok), "errors": len(records) - len(ok)}
    if ok:
        out["bytes_per_image"] = round(float(np.mean([r["bytes"] for r in ok])), 1)
        for stage in SUMMARY_STAGES:
            values = [r[stage] for r in ok if stage in r]
            if values:
                out[f"{stage[:-3]}_p50_ms"] = round(float(np.median(values)), 3)
    return out


def run(args: argparse.Namespace) -> int:
    from edgecloud.backends.options import runner_from_args
    from edgecloud.cli.common import write_json
    from edgecloud.edge import EdgeClient, iter_frames
    from edgecloud.models import load_model
    from edgecloud.transport import SocketOptions

    spec = load_model(args.model, weights=args.weights)
    cut = args.cut or DEFAULT_CUT
    calibration = None
    if args.codec_calibration:
        from edgecloud.codec import CodecCalibration

        calibration = CodecCalibration.load(args.codec_calibration)
    head = runner_from_args(args, spec, cut)
    records: List[Dict[str, Any]] = []
    sink = open(args.jsonl, "w") if args.jsonl else None  # noqa: SIM115 - closed below
    try:
        with EdgeClient(
            args.connect,
            spec=spec,
            cut=cut,
            codec=args.codec,
            head=head,
            calibration=calibration,
            window=args.window,
            timeout_s=args.timeout,
            retries=args.retries,
            top_k=args.top_k,
            options=SocketOptions(
                curve_secret_file=args.curve_secret, curve_server_key_file=args.curve_server_key
            ),
        ) as edge:
            for result in edge.stream(iter_frames(args.source, args.limit)):
                record = result.to_dict()
                records.append(record)
                if sink:
                    sink.write(json.dumps(record) + "\n")
                    sink.flush()
                if result.ok:
                    print(
                        f"{result.name}  {result.labels[0]} ({result.scores[0]:.2f})  "
                        f"{result.bytes_sent} B  rtt {result.timings['rtt_ms']:.1f} ms"
                    )
                else:
                    print(f"{result.name}  ERROR {result.code}: {result.message}", file=sys.stderr)
    finally:
        if sink:
            sink.close()
    summary = summarize(records)
    summary.update(model=spec.name, cut=cut, codec=args.codec, backend=args.backend)
    summary["int8"] = args.int8
    print(json.dumps(summary))
    write_json(args.json_path, summary)
    return 0 if records and summary["errors"] == 0 else 1
