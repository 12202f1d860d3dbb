"""Build and cache TensorRT engines from a head's ONNX (TensorRT 8.5 to 10.x, one code path).

Written against the name-based TensorRT API that exists from 8.5 (JetPack 5.1) through 10.x
(JetPack 6.x): ``Builder.create_network``, ``OnnxParser``, ``set_memory_pool_limit``,
optimization profiles, timing cache, ``build_serialized_network``. TensorRT 11 drops the
INT8 calibrators and the INT8/FP16 builder flags and is not supported.

Precisions:
- ``int8``: explicit quantization from the calibrated QDQ ONNX (``head_qdq.onnx``);
- ``int8-implicit``: the fp32 ONNX plus the calibration cache (for the DLA on JetPack 5/6);
- ``fp16`` / ``fp32``: the fp32 ONNX.
``fp16=True`` additionally lets TensorRT run unquantized layers in FP16.

Engines are tied to the TensorRT version and the GPU, so each is stored under a key made of
sha256(ONNX) + TensorRT version + GPU name and compute capability + precision + batch profile
+ DLA core (+ calibration cache hash): built once per device, then loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from edgecloud.artifacts import sha256_file
from edgecloud.errors import BackendUnavailableError, CalibrationError, EdgecloudError
from edgecloud.quantize.trt_cache import with_header

log = logging.getLogger(__name__)

PRECISIONS = ("int8", "int8-implicit", "fp16", "fp32")
DEFAULT_ENGINE_DIR = "engines"
MIN_VERSION = (8, 5)


class EngineBuildError(EdgecloudError):
    """TensorRT could not parse the ONNX or build the engine (its log lines are included)."""


def import_tensorrt():
    """The ``tensorrt`` module; BackendUnavailableError if missing or unsupported."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailableError(
            "TensorRT is not installed: on a Jetson use JetPack's python3-libnvinfer "
            "(TensorRT 8.5.2 / 8.6.2 / 10.3); on a PC `pip install tensorrt` (see docs/jetson.md)"
        ) from exc
    version = tuple(int(p) for p in trt.__version__.split(".")[:2])
    if version < MIN_VERSION or version[0] >= 11:
        raise BackendUnavailableError(
            f"TensorRT {trt.__version__} is not supported (need 8.5 <= version < 11)"
        )
    return trt


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; ``digest`` names the engine file."""

    onnx_sha256: str
    tensorrt: str
    gpu: str
    compute_capability: str
    precision: str
    fp16: bool
    profile: Tuple[int, int, int]  # min, opt, max batch
    dla_core: Optional[int]
    calibration_cache_sha256: Optional[str] = None

    @property
    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:24]


def make_logger(trt):
    """A trt.ILogger that keeps errors and warnings (``.messages``) for error reports."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages = []

        def log(self, severity, msg) -> None:
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                self.messages.append(f"{severity.name}: {msg}")
                log.debug("TensorRT %s: %s", severity.name, msg)

    return Logger()


def _cache_calibrator(trt, cache: bytes, batch: int):
    """An IInt8EntropyCalibrator2 that only replays a calibration cache (never calibrates)."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names):
            return None  # no data: TensorRT must use the cache

        def read_calibration_cache(self):
            return cache

        def write_calibration_cache(self, data) -> None:
            return None

    return CacheCalibrator()


def build_engine(
    onnx_path: Path,
    *,
    input_name: str,
    input_shape: Tuple[int, ...],
    precision: str,
    profile: Tuple[int, int, int],
    fp16: bool = False,
    dla_core: Optional[int] = None,
    calibration_cache: Optional[Path] = None,
    timing_cache: Optional[Path] = None,
    workspace_mb: int = 1024,
) -> bytes:
    """Serialized engine for ``onnx_path``; EngineBuildError with TensorRT's messages on failure."""
    trt = import_tensorrt()
    if precision not in PRECISIONS:
        raise EngineBuildError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:  # explicit batch is the only mode from 10.0
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path}: " + "; ".join(errors))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision in ("int8", "int8-implicit"):
        config.set_flag(trt.BuilderFlag.INT8)
    if fp16 or precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)

    opt_profile = builder.create_optimization_profile()
    lo, opt, hi = profile
    opt_profile.set_shape(input_name, (lo, *input_shape), (opt, *input_shape), (hi, *input_shape))
    config.add_optimization_profile(opt_profile)

    if precision == "int8-implicit":
        if calibration_cache is None or not Path(calibration_cache).is_file():
            raise CalibrationError("implicit INT8 needs the calibration cache of a calibration")
        cache = with_header(Path(calibration_cache).read_text(), trt.__version__)
        config.int8_calibrator = _cache_calibrator(trt, cache, opt)
        config.set_calibration_profile(opt_profile)

    if dla_core is not None:
        if builder.num_DLA_cores <= dla_core:
            raise BackendUnavailableError(
                f"DLA core {dla_core} requested, this device has {builder.num_DLA_cores}"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    timing = config.create_timing_cache(
        timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    )
    config.set_timing_cache(timing, False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT failed to build an engine from {onnx_path}: "
            + " | ".join(logger.messages[-10:])
        )
    if timing_cache:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def gpu_identity(device_index: int = 0) -> Tuple[str, str]:
    """(GPU name, compute capability "X.Y") via PyCUDA."""
    cuda = import_pycuda()
    device = cuda.Device(device_index)
    major, minor = device.compute_capability()
    return device.name(), f"{major}.{minor}"


def import_pycuda():
    """``pycuda.driver`` initialised; BackendUnavailableError without PyCUDA or a GPU."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendUnavailableError(
            "PyCUDA is not installed: `pip install edgecloud[jetson]` (needs the CUDA toolkit)"
        ) from exc
    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error as exc:
        raise BackendUnavailableError(f"CUDA is not usable: {exc}") from exc
    if count == 0:
        raise BackendUnavailableError("no CUDA GPU found")
    return cuda


def engine_key(
    onnx_path: Path,
    *,
    precision: str,
    fp16: bool,
    profile: Tuple[int, int, int],
    dla_core: Optional[int],
    calibration_cache: Optional[Path],
    device_index: int = 0,
) -> EngineKey:
    trt = import_tensorrt()
    gpu, capability = gpu_identity(device_index)
    return EngineKey(
        onnx_sha256=sha256_file(onnx_path),
        tensorrt=trt.__version__,
        gpu=gpu,
        compute_capability=capability,
        precision=precision,
        fp16=fp16,
        profile=tuple(profile),
        dla_core=dla_core,
        calibration_cache_sha256=sha256_file(calibration_cache)
        if precision == "int8-implicit" and calibration_cache
        else None,
    )


def load_or_build(
    onnx_path: Path,
    key: EngineKey,
    engine_dir: Path,
    *,
    rebuild: bool = False,
    **build_args: Any,
) -> Tuple[bytes, Path, bool]:
    """(serialized engine, its path, whether it was built now) for ``key`` under ``engine_dir``.

    Engines are written next to a ``.json`` with their key; the timing cache is shared per
    TensorRT version and GPU.
    """
    engine_dir = Path(engine_dir)
    path = engine_dir / f"{key.digest}.engine"
    if path.is_file() and not rebuild:
        return path.read_bytes(), path, False
    gpu_tag = hashlib.sha256(f"{key.tensorrt}|{key.gpu}|{key.compute_capability}".encode())
    timing = engine_dir / f"timing-{gpu_tag.hexdigest()[:16]}.cache"
    engine = build_engine(
        onnx_path,
        precision=key.precision,
        profile=key.profile,
        fp16=key.fp16,
        dla_core=key.dla_core,
        timing_cache=timing,
        **build_args,
    )
    engine_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(engine)
    tmp.replace(path)
    meta: Dict[str, Any] = {**asdict(key), "onnx": str(onnx_path)}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return engine, path, True
