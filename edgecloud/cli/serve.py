"""``edgecloud serve``: the cloud receiver daemon."""

from __future__ import annotations

import argparse
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
and stops gracefully on SIGINT/SIGTERM (queued requests are finished and answered).
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
        "--queue-size", type=int, default=None, help="bounded queue length (default 256)"
    )
    p.add_argument("--request-timeout", type=float, default=None, help="seconds (default 10)")
    p.add_argument(
        "--max-message-bytes", type=int, default=None, help="ZMQ_MAXMSGSIZE (default 16 MiB)"
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
    return config.validate()


def run(args: argparse.Namespace) -> int:
    from edgecloud.cloud.server import CloudServer

    server = CloudServer(build_config(args))
    endpoint = server.start()
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        signal.signal(signum, signal.SIG_DFL)  # a second signal kills at once
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"READY {endpoint}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    sys.stdout.flush()
    return 0
