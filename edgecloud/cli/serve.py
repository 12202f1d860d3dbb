"""``edgecloud serve``: the cloud receiver daemon."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from typing import Any

from edgecloud.cli.options import (
    DEFAULT_ENDPOINT,
    add_command,
    add_cut,
    add_data,
    add_limit,
    add_model,
    add_threads,
    endpoint,
    host_port,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
)
from edgecloud.cloud.config import EXECUTORS

EPILOG = """\
examples:
  edgecloud serve --bind tcp://0.0.0.0:5555       # the default model at its served cuts
  edgecloud serve --bind tcp://0.0.0.0:5555 --cut blocks.4 --cut blocks.5
  edgecloud serve --config serve.toml --device cuda
  edgecloud serve --max-batch-size 1              # dynamic batching off
  edgecloud serve --device cuda --precision fp16 --data ../shared/data/imagenet-samples
  edgecloud serve --executor triton --triton-url triton:8001 --http-bind 0.0.0.0:8080

Flags override the config file. The daemon loads every tail and runs one warm-up batch
through each, then prints "READY <endpoint>" on stdout; it logs one key=value line per event
and a stats line every --stats-interval seconds. SIGINT/SIGTERM: queued requests are finished
and answered for at most --drain-timeout seconds, the rest are answered shutting_down; a
second signal stops at once.

With --executor triton the tails run on a Triton Inference Server (models written by
`edgecloud export-triton`); the daemon still receives, checks, decodes and batches. With
--http-bind it serves Prometheus /metrics, /health/live and /health/ready (docs/runtime.md).
"""


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "serve",
        help="run the cloud daemon (ZeroMQ ROUTER, dynamic batching, tails)",
        description="Cloud receiver daemon: receives compressed features from edge devices, "
        "checks and decodes them, batches them fairly across clients, runs the tail and replies.",
        epilog=EPILOG,
    )
    p.add_argument("--config", default=None, help="TOML config file (see docs/runtime.md)")
    p.add_argument(
        "--bind",
        type=endpoint,
        default=None,
        help=f"ZeroMQ endpoint (default {DEFAULT_ENDPOINT}; tcp://HOST:0 picks a free port)",
    )
    add_model(p)
    add_cut(
        p,
        many=True,
        help="cut to serve (repeatable; default: the model's served cuts, see `edgecloud cuts`)",
    )
    p.add_argument("--device", default=None, help="where tails run: cpu (default), cuda, cuda:N")
    p.add_argument(
        "--codec-calibration",
        action="append",
        default=None,
        metavar="FILE",
        help="codec calibration file (repeatable), in addition to the shipped presets",
    )
    p.add_argument(
        "--no-codec-presets",
        dest="codec_presets",
        action="store_const",
        const=False,
        default=None,
        help="do not load the codec calibration presets shipped with edgecloud",
    )
    p.add_argument(
        "--max-batch-size", type=positive_int, default=None, help="1 disables batching (default 8)"
    )
    p.add_argument(
        "--max-queue-delay-ms",
        type=nonnegative_float,
        default=None,
        help="longest wait of a batch's first request for more while a batch computes (default 5)",
    )
    p.add_argument(
        "--wait-when-idle",
        action="store_const",
        const=True,
        default=None,
        help="wait --max-queue-delay-ms for more requests even when no batch computes "
        "(Triton's rule; default: an idle daemon starts a batch at once)",
    )
    p.add_argument(
        "--queue-size",
        type=positive_int,
        default=None,
        help="requests queued in all (default 1024)",
    )
    p.add_argument(
        "--queue-bytes",
        type=positive_int,
        default=None,
        help="payload bytes queued in all (default 64 MiB)",
    )
    p.add_argument(
        "--max-inflight-per-client",
        type=positive_int,
        default=None,
        help="requests a client may have queued or computing; beyond: queue_full (default 64)",
    )
    p.add_argument(
        "--rate-per-client",
        type=nonnegative_float,
        default=None,
        help="requests/s per client, beyond: rate_limited (default 0: unlimited)",
    )
    p.add_argument(
        "--rate-burst",
        type=positive_int,
        default=None,
        help="token-bucket size of --rate-per-client: requests a client may send at once "
        "above its rate (default 64)",
    )
    p.add_argument(
        "--fair-batch-share",
        action="store_const",
        const=True,
        default=None,
        help="a client fills at most its share of a batch (the batch size over the clients "
        "active in the last second), so that one client's backlog does not fill every batch "
        "(default: off, batches fill from every client in turn)",
    )
    p.add_argument(
        "--request-timeout",
        type=positive_float,
        default=None,
        help="seconds a request may wait, then: timeout (default 10)",
    )
    p.add_argument(
        "--drain-timeout",
        type=nonnegative_float,
        default=None,
        help="on SIGTERM, seconds to finish queued requests (default 5)",
    )
    p.add_argument(
        "--max-message-bytes",
        type=nonnegative_int,
        default=None,
        help="bound on a whole request (default 0: the largest float32 feature served + 64 KiB)",
    )
    p.add_argument(
        "--stats-interval",
        type=positive_float,
        default=None,
        help="seconds between stats log lines (default 30)",
    )
    add_threads(p, "tails (torch or ONNX Runtime)")
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="worker threads that run tails (default 1)",
    )
    p.add_argument(
        "--decode-workers",
        type=nonnegative_int,
        default=None,
        help="decode worker processes (default: the cores less one; 0: decode in the tail "
        "threads, one process)",
    )
    p.add_argument(
        "--precision",
        choices=["fp32", "fp16"],
        default=None,
        help="tail arithmetic: fp32 (default) or fp16 with channels-last (for GPUs), "
        "checked against fp32 at start on --data",
    )
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=None,
        help="what runs the tails: torch (default) or ONNX Runtime (fp32; faster on CPUs) in "
        "this process, or a Triton server",
    )
    p.add_argument(
        "--triton-url",
        type=host_port,
        default=None,
        help="--executor triton: the Triton server's gRPC HOST:PORT (default 127.0.0.1:8001)",
    )
    p.add_argument(
        "--http-bind",
        type=host_port,
        default=None,
        help="HOST:PORT serving /metrics (Prometheus), /health/live and /health/ready "
        "(default: none)",
    )
    add_data(
        p,
        default=None,
        help="images on which a --precision below fp32 is checked at start "
        "(top-1 agreement with fp32; in the log and in ping)",
    )
    add_limit(p)
    p.add_argument(
        "--curve-secret", default=None, help="CurveZMQ: the daemon's .key_secret (encrypts)"
    )
    p.add_argument(
        "--curve-clients", default=None, help="CurveZMQ: folder of allowed edge .key files"
    )
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """Config file (if any) overridden by the flags that were given."""
    from edgecloud.cli.options import model_name
    from edgecloud.cloud.config import ModelConfig, ServerConfig, load_config

    config = load_config(args.config) if args.config else ServerConfig()
    if args.model or args.cuts or args.weights:
        config.models = [ModelConfig(model_name(args), args.cuts or [], weights=args.weights)]
    overrides = {
        "bind": args.bind,
        "device": args.device,
        "max_message_bytes": args.max_message_bytes,
        "stats_interval_s": args.stats_interval,
        "drain_timeout_s": args.drain_timeout,
        "torch_threads": args.threads,
        "workers": args.workers,
        "decode_workers": args.decode_workers,
        "precision": args.precision,
        "executor": args.executor,
        "triton_url": args.triton_url,
        "http_bind": args.http_bind,
        "precision_check_data": args.data,
        "precision_check_images": args.limit,
        "codec_calibrations": args.codec_calibration,
        "codec_presets": args.codec_presets,
        "curve_secret_file": args.curve_secret,
        "curve_clients_dir": args.curve_clients,
    }
    tables = [
        (
            config.batching,
            {
                "max_batch_size": args.max_batch_size,
                "max_queue_delay_ms": args.max_queue_delay_ms,
                "wait_when_idle": args.wait_when_idle,
                "queue_size": args.queue_size,
                "request_timeout_s": args.request_timeout,
            },
        ),
        (
            config.admission,
            {
                "queue_bytes": args.queue_bytes,
                "max_inflight_per_client": args.max_inflight_per_client,
                "rate_per_client": args.rate_per_client,
                "rate_burst": args.rate_burst,
                "fair_batch_share": args.fair_batch_share,
            },
        ),
    ]
    for target, values in [(config, overrides), *tables]:
        for key, value in values.items():
            if value is not None:
                setattr(target, key, value)
    return config.validate()


def run(args: argparse.Namespace) -> int:
    from edgecloud.cloud.server import CloudServer

    server = CloudServer(build_config(args))
    endpoint_ = server.start()
    # What is loaded by now (torch, the tails, the codecs) lives as long as the process:
    # the collector's full passes need not walk it. Unfrozen, the first full pass that fell
    # due under load stalled every thread for ~150 ms (2-core VM); frozen, a pass walks only
    # what requests allocated since.
    gc.collect()
    gc.freeze()
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal stops at once
            signal.signal(sig, signal.SIG_DFL)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"READY {endpoint_}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    # Everything is answered and the socket is closed: end the process now instead of
    # waiting about a second for the interpreter to tear torch down.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
