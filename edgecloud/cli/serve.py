"""``edgecloud serve``: the cloud receiver daemon."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from edgecloud.cli.common import DEFAULT_MODEL

EPILOG = """\
examples:
  edgecloud serve --bind tcp://0.0.0.0:5555              # cuts blocks and blocks.4
  edgecloud serve --bind tcp://0.0.0.0:5555 --cut blocks.4 --cut blocks.5
  edgecloud serve --config serve.toml --device cuda
  edgecloud serve --max-batch-size 1          # dynamic batching off

Flags override the config file. The daemon prints "READY <endpoint>" on stdout once it
listens, logs one key=value line per event and a stats line every --stats-interval seconds,
and stops gracefully on SIGINT/SIGTERM: queued requests are finished and answered for at most
--drain-timeout seconds, the rest are answered shutting_down; a second signal stops at once.
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the cloud daemon (ZeroMQ ROUTER, dynamic batching, tails)",
        description="Cloud receiver daemon: receives compressed features from edge devices, "
        "decodes them, batches them dynamically, runs the tail and replies.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default=None, help="TOML config file (see docs/runtime.md)")
    p.add_argument(
        "--bind", default=None, help="ZeroMQ endpoint (default tcp://127.0.0.1:5555; port 0: any)"
    )
    p.add_argument("--model", default=None, help=f"model to serve (default {DEFAULT_MODEL})")
    p.add_argument("--weights", default=None, help="weights file of the model")
    p.add_argument(
        "--cut",
        action="append",
        default=None,
        help="cut to serve (repeatable; default blocks and blocks.4)",
    )
    p.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
    p.add_argument(
        "--codec-calibration",
        action="append",
        default=None,
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
        "--max-batch-size", type=int, default=None, help="1 disables batching (default 8)"
    )
    p.add_argument(
        "--max-queue-delay-ms",
        type=float,
        default=None,
        help="longest wait of a batch's first request for more requests (default 5)",
    )
    p.add_argument(
        "--queue-size", type=int, default=None, help="bounded queue length (default 1024)"
    )
    p.add_argument(
        "--queue-bytes", type=int, default=None, help="bound of queued payload bytes (64 MiB)"
    )
    p.add_argument(
        "--max-inflight-per-client",
        type=int,
        default=None,
        help="requests a client may have queued or computing; beyond: queue_full (default 64)",
    )
    p.add_argument(
        "--rate-per-client",
        type=float,
        default=None,
        help="requests/s per client, beyond: rate_limited (default 0 = unlimited)",
    )
    p.add_argument("--request-timeout", type=float, default=None, help="seconds (default 10)")
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        help="on SIGTERM, seconds to finish queued requests; the rest get shutting_down (5)",
    )
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=None,
        help="bound on a whole request (default 0: the largest float32 feature served + 64 KiB)",
    )
    p.add_argument("--stats-interval", type=float, default=None, help="seconds (default 30)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument("--workers", type=int, default=None, help="tail worker threads (default 1)")
    p.add_argument(
        "--curve-secret", default=None, help="CurveZMQ: the daemon's .key_secret (encrypts)"
    )
    p.add_argument(
        "--curve-clients", default=None, help="CurveZMQ: folder of allowed edge .key files"
    )
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """Config file (if any) overridden by the flags that were given."""
    from edgecloud.cloud.config import SERVED_CUTS, ModelConfig, ServerConfig, load_config

    config = load_config(args.config) if args.config else ServerConfig()
    if args.model or args.cut or args.weights:
        config.models = [
            ModelConfig(
                args.model or DEFAULT_MODEL, args.cut or list(SERVED_CUTS), weights=args.weights
            )
        ]
    overrides = {
        "bind": args.bind,
        "device": args.device,
        "max_message_bytes": args.max_message_bytes,
        "stats_interval_s": args.stats_interval,
        "drain_timeout_s": args.drain_timeout,
        "torch_threads": args.threads,
        "workers": args.workers,
        "codec_calibrations": args.codec_calibration,
        "codec_presets": args.codec_presets,
        "curve_secret_file": args.curve_secret,
        "curve_clients_dir": args.curve_clients,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    batching = {
        "max_batch_size": args.max_batch_size,
        "max_queue_delay_ms": args.max_queue_delay_ms,
        "queue_size": args.queue_size,
        "request_timeout_s": args.request_timeout,
    }
    for key, value in batching.items():
        if value is not None:
            setattr(config.batching, key, value)
    admission = {
        "queue_bytes": args.queue_bytes,
        "max_inflight_per_client": args.max_inflight_per_client,
        "rate_per_client": args.rate_per_client,
    }
    for key, value in admission.items():
        if value is not None:
            setattr(config.admission, key, value)
    return config.validate()


def run(args: argparse.Namespace) -> int:
    from edgecloud.cloud.server import CloudServer

    server = CloudServer(build_config(args))
    endpoint = server.start()
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal stops at once
            signal.signal(sig, signal.SIG_DFL)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"READY {endpoint}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    # Everything is answered and the socket is closed: end the process now instead of
    # waiting about a second for the interpreter to tear torch down.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
