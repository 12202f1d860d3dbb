"""Daemon configuration: a TOML file and/or command-line flags.

Example ``serve.toml``::

    bind = "tcp://0.0.0.0:5555"
    device = "cpu"                 # or "cuda", "cuda:1"
    max_message_bytes = 0          # bound on a whole request; 0: the largest float32 feature
                                   # served + 64 KiB (also ZMQ_MAXMSGSIZE: the peer is dropped)
    drain_timeout_s = 5.0          # on SIGTERM: answer queued work for at most this long
    reply_cache_bytes = 33554432   # reply cache bound in bytes (and reply_cache_size entries)
    decode_workers = -1            # decode processes; -1: cores less one; 0: decode in-process
    workers = 1                    # tail threads
    executor = "torch"             # tails run by "torch" or "onnxruntime" (here), or "triton" ...
    triton_url = "127.0.0.1:8001"  # ... a Triton server's gRPC HOST:PORT (edgecloud export-triton)
    triton_timeout_s = 10.0        # a Triton request not answered by then: executor_unavailable
    http_bind = ""                 # HOST:PORT of /metrics, /health/live, /health/ready ("": off)
    precision = "fp32"             # or "fp16" (channels-last; GPUs), checked against fp32 ...
    precision_check_data = ""      # ... on these images (top-1 agreement, in the log and ping)
    max_streams = 1024             # stream references held (frames coded against the last)
    stream_idle_s = 60.0           # an idle stream is forgotten: its next frame needs a keyframe
    codec_calibrations = []        # codec calibration files, for calibrated codec specs
    codec_presets = true           # also load the calibrations shipped in edgecloud/presets
    # curve_secret_file = "keys/server.key_secret"   # CurveZMQ encryption ...
    # curve_clients_dir = "keys/clients"             # ... and allow-list of edge public keys

    [batching]
    max_batch_size = 8             # 1 turns dynamic batching off
    max_queue_delay_ms = 5.0       # how long the first request of a batch may wait for more
    wait_when_idle = false         # true: it waits so even when no batch is computing
    queue_size = 1024              # bounded queue; beyond it requests get "queue_full"
    request_timeout_s = 10.0       # requests older than this get "timeout" instead of a result

    [admission]
    max_inflight_per_client = 64   # queued + computing, per client; beyond: "queue_full"
    queue_bytes = 67108864         # payload bytes queued in all; beyond: "queue_full"
    rate_per_client = 0.0          # requests/s per client, 0 = unlimited; beyond: "rate_limited"
    rate_burst = 64                # token-bucket size of the rate limit
    fair_batch_share = false       # true: a client fills at most max_batch_size / active clients

    [[models]]
    name = "efficientnet_lite0"
    cuts = ["blocks", "blocks.3"]    # omitted: the model's served cuts (`edgecloud cuts`)
    # weights = "path/to/state_dict.pt"
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from edgecloud.errors import ConfigError
from edgecloud.models.record import DEFAULT_MODEL

#: what may run a daemon's tails (``executor``)
EXECUTORS = ("torch", "onnxruntime", "triton")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python < 3.11 (Jetson)
    import tomli as tomllib


@dataclass
class ModelConfig:
    """One model served by the daemon and the cuts whose tails it loads (none given: the
    model record's served cuts, see ``edgecloud cuts``)."""

    name: str
    cuts: List[str] = field(default_factory=list)
    weights: Optional[str] = None


@dataclass
class BatchingConfig:
    max_batch_size: int = 8
    max_queue_delay_ms: float = 5.0
    wait_when_idle: bool = False  # False: an idle daemon starts a batch at once
    queue_size: int = 1024
    request_timeout_s: float = 10.0


@dataclass
class AdmissionConfig:
    """Per-client limits and the byte bound of the queue (see edgecloud.cloud.admission)."""

    max_inflight_per_client: int = 64
    queue_bytes: int = 64 * 1024 * 1024
    rate_per_client: float = 0.0  # requests/s, 0 = unlimited
    rate_burst: int = 64
    fair_batch_share: bool = False  # a client's share of a batch: batch size / active clients


@dataclass
class ServerConfig:
    bind: str = "tcp://127.0.0.1:5555"
    device: str = "cpu"
    models: List[ModelConfig] = field(default_factory=lambda: [ModelConfig(DEFAULT_MODEL)])
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    max_message_bytes: int = 0  # 0: derived from the served cuts (see message_limit)
    drain_timeout_s: float = 5.0
    keepalive_idle_s: int = 10  # TCP keepalive: a silent peer is probed after this long
    reply_cache_size: int = 4096
    reply_cache_bytes: int = 32 * 1024 * 1024
    reply_cache_ttl_s: float = 60.0
    stats_interval_s: float = 30.0
    codec_calibrations: List[str] = field(default_factory=list)
    codec_presets: bool = True  # also load edgecloud.presets' calibrations
    torch_threads: int = 0  # compute threads of the tails (torch, ONNX Runtime); 0: default
    workers: int = 1  # tail threads (batches computed concurrently)
    decode_workers: int = -1  # decode processes; -1: the number of cores less one (at least 1)
    precision: str = "fp32"  # tails in fp32, or fp16 (with channels-last; for GPUs)
    precision_check_data: str = ""  # images to check a precision below fp32 on ("": none)
    precision_check_images: int = 64
    max_streams: int = 1024  # stream references held; beyond: too_many_streams
    stream_idle_s: float = 60.0  # a stream unused this long is forgotten (needs a keyframe)
    executor: str = "torch"  # "torch" or "onnxruntime" (tails in this process), or "triton"
    triton_url: str = "127.0.0.1:8001"  # gRPC HOST:PORT of the Triton server
    triton_timeout_s: float = 10.0
    http_bind: str = ""  # HOST:PORT of the metrics and health endpoints ("": none)
    curve_secret_file: Optional[str] = None  # CurveZMQ: the server's .key_secret
    curve_clients_dir: Optional[str] = None  # allow-list of client .key files (None: any)

    def validate(self) -> ServerConfig:
        b = self.batching
        if b.max_batch_size < 1 or b.queue_size < 1:
            raise ConfigError("batching.max_batch_size and batching.queue_size must be >= 1")
        if b.max_queue_delay_ms < 0 or b.request_timeout_s <= 0:
            raise ConfigError("max_queue_delay_ms must be >= 0 and request_timeout_s > 0")
        for table, name, value in (
            ("batching", "wait_when_idle", b.wait_when_idle),
            ("admission", "fair_batch_share", self.admission.fair_batch_share),
        ):
            if not isinstance(value, bool):
                raise ConfigError(f"{table}.{name} must be true or false, not {value!r}")
        if self.workers < 1:
            raise ConfigError("workers must be >= 1")
        if self.decode_workers < -1:
            raise ConfigError("decode_workers must be >= 0 (0: decode in the tail thread), or -1")
        if self.precision not in ("fp32", "fp16"):
            raise ConfigError(f"precision must be fp32 or fp16, not {self.precision!r}")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor must be one of {EXECUTORS}, not {self.executor!r}")
        if self.executor == "triton" and self.precision != "fp32":
            raise ConfigError(
                "precision applies to the torch executor; with Triton, the model's config.pbtxt "
                "decides (edgecloud export-triton --tensorrt)"
            )
        if self.executor == "onnxruntime" and self.precision != "fp32":
            raise ConfigError("the onnxruntime executor runs fp32 tails: use --executor torch")
        if self.triton_timeout_s <= 0:
            raise ConfigError("triton_timeout_s must be > 0")
        if self.http_bind:
            parse_host_port(self.http_bind, "http_bind")
        if self.precision_check_images < 1:
            raise ConfigError("precision_check_images must be >= 1")
        if self.max_streams < 1 or self.stream_idle_s <= 0:
            raise ConfigError("max_streams must be >= 1 and stream_idle_s > 0")
        if self.max_message_bytes != 0 and self.max_message_bytes < 1024:
            raise ConfigError("max_message_bytes must be 0 (automatic) or at least 1024")
        a = self.admission
        if a.max_inflight_per_client < 1 or a.queue_bytes < 1 or a.rate_burst < 1:
            raise ConfigError(
                "admission.max_inflight_per_client, queue_bytes and rate_burst must be >= 1"
            )
        if a.rate_per_client < 0 or self.drain_timeout_s < 0:
            raise ConfigError("admission.rate_per_client and drain_timeout_s must be >= 0")
        if not self.models:
            raise ConfigError("no models configured")
        return self


def parse_host_port(value: str, what: str) -> Tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as (host, port); ConfigError naming ``what``."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{what} must be HOST:PORT, e.g. 0.0.0.0:8080, not {value!r}")
    return host.strip("[]"), int(port)


def decode_workers(config: ServerConfig) -> int:
    """Decode worker processes: the configured number, or the cores less one (at least 1)."""
    if config.decode_workers >= 0:
        return config.decode_workers
    return max(1, (os.cpu_count() or 2) - 1)


def message_limit(config: ServerConfig, feature_elements: int) -> int:
    """Bytes a whole request may have: ``max_message_bytes``, or (0) the float32 bitstream of
    the largest served feature (``feature_elements``) plus 64 KiB for headers."""
    return config.max_message_bytes or 4 * feature_elements + 64 * 1024


def _build(cls: type, data: Dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown} (known: {sorted(known)})")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def config_from_dict(data: Dict[str, Any]) -> ServerConfig:
    """Build and validate a :class:`ServerConfig` from parsed TOML."""
    data = dict(data)
    batching = _build(BatchingConfig, data.pop("batching", {}), "[batching]")
    admission = _build(AdmissionConfig, data.pop("admission", {}), "[admission]")
    models_data = data.pop("models", None)
    config = _build(ServerConfig, data, "config")
    config.batching = batching
    config.admission = admission
    if models_data is not None:
        if not isinstance(models_data, list):
            raise ConfigError("models must be an array of tables ([[models]])")
        config.models = [
            _build(ModelConfig, m, f"[[models]] #{i}") for i, m in enumerate(models_data)
        ]
    return config.validate()


def load_config(path: Union[str, Path]) -> ServerConfig:
    """Read a TOML daemon configuration file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return config_from_dict(data)
