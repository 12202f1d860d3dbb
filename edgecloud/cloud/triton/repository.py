"""Triton model repositories for the tails a daemon serves (``edgecloud export-triton``).

Triton's layout, one model per (model, cut, weights)::

    REPO/efficientnet_lite0__blocks__153bf98b/config.pbtxt
    REPO/efficientnet_lite0__blocks__153bf98b/1/model.onnx
    REPO/efficientnet_lite0__blocks__153bf98b/edgecloud.json   # manifest (ignored by Triton)

``config.pbtxt`` is built as Triton's own ``ModelConfig`` protobuf message (the schema of
``model_config.proto``, shipped in ``tritonclient``) and written in its text format, so it is
valid by construction and read back by the same parser Triton uses. The name carries the
weights id: a daemon never sends features to a Triton that serves other weights (the model is
not there, and the executor says so). The manifest holds the ONNX file's sha256.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Union

from edgecloud.artifacts import read_manifest, sha256_file, write_manifest
from edgecloud.errors import ArtifactError, ConfigError

INPUT_NAME = "features"
OUTPUT_NAME = "logits"
MANIFEST = "edgecloud.json"
FORMAT = "edgecloud-triton-tail/1"
KINDS = ("cpu", "gpu", "auto")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def triton_model_name(model: str, cut: str, weights_id: str) -> str:
    """The Triton model that serves the tail of ``model`` after ``cut`` with those weights."""
    return _UNSAFE.sub("_", f"{model}__{cut}__{weights_id[:8]}")


@dataclass
class TritonModelOptions:
    """What goes into ``config.pbtxt`` besides the tensors (Triton's dynamic batcher and
    instance groups; ``tensorrt`` asks ONNX Runtime's TensorRT execution provider, on GPUs)."""

    max_batch_size: int = 64
    preferred_batch_sizes: Tuple[int, ...] = (8, 16, 32)
    max_queue_delay_us: int = 2000
    instances: int = 1
    kind: str = "auto"
    tensorrt: bool = False
    tensorrt_precision: str = "FP16"

    def validate(self) -> TritonModelOptions:
        if self.max_batch_size < 1 or self.instances < 1 or self.max_queue_delay_us < 0:
            raise ConfigError("max_batch_size and instances must be >= 1, max_queue_delay_us >= 0")
        bad = [n for n in self.preferred_batch_sizes if not 1 <= n <= self.max_batch_size]
        if bad:
            raise ConfigError(
                f"preferred batch sizes {bad} are not within 1..{self.max_batch_size}"
            )
        if self.kind not in KINDS:
            raise ConfigError(f"instance kind must be one of {KINDS}, not {self.kind!r}")
        if self.tensorrt and self.kind == "cpu":
            raise ConfigError("TensorRT acceleration needs GPU instances (kind gpu or auto)")
        if self.tensorrt_precision not in ("FP32", "FP16"):
            raise ConfigError("tensorrt_precision must be FP32 or FP16")
        return self


def _model_config_pb2() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise ConfigError(
            "Triton support needs tritonclient: pip install 'edgecloud[triton]'"
        ) from None
    return model_config_pb2


def model_config(name: str, shape: Sequence[int], classes: int, options: TritonModelOptions) -> Any:
    """Triton's ``ModelConfig`` message for a tail: features (N, *shape) -> logits (N, classes)."""
    pb = _model_config_pb2()
    options.validate()
    config = pb.ModelConfig(
        name=name,
        backend="onnxruntime",
        max_batch_size=options.max_batch_size,
        input=[pb.ModelInput(name=INPUT_NAME, data_type=pb.TYPE_FP32, dims=list(shape))],
        output=[pb.ModelOutput(name=OUTPUT_NAME, data_type=pb.TYPE_FP32, dims=[classes])],
        dynamic_batching=pb.ModelDynamicBatching(
            preferred_batch_size=list(options.preferred_batch_sizes),
            max_queue_delay_microseconds=options.max_queue_delay_us,
        ),
        instance_group=[
            pb.ModelInstanceGroup(
                count=options.instances,
                kind=pb.ModelInstanceGroup.Kind.Value(f"KIND_{options.kind.upper()}"),
            )
        ],
    )
    if options.tensorrt:
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
        accelerator.name = "tensorrt"
        accelerator.parameters["precision_mode"] = options.tensorrt_precision
        accelerator.parameters["max_workspace_size_bytes"] = str(1 << 30)
    return config


def render_config(config: Any) -> str:
    """``config.pbtxt`` text of a ``ModelConfig`` message."""
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def parse_config(text: str) -> Any:
    """A ``config.pbtxt`` parsed against Triton's schema; :class:`ArtifactError` naming the
    offending field otherwise."""
    from google.protobuf import text_format

    pb = _model_config_pb2()
    try:
        return text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as exc:
        raise ArtifactError(
            f"config.pbtxt does not follow Triton's model_config schema: {exc}"
        ) from None


def export_tail(
    spec: Any,
    cut: str,
    repository: Union[str, Path],
    options: TritonModelOptions,
    *,
    overwrite: bool = False,
) -> Path:
    """Export the tail of ``spec`` (a ``ModelSpec``) after ``cut`` into ``repository``:
    ONNX (checked against torch in ONNX Runtime), ``config.pbtxt`` and the manifest; returns
    the model's folder. The folder appears whole or not at all (it is written beside it and
    renamed), so an interrupted export leaves no half model for Triton to load."""
    from edgecloud.partition import get_cut

    shape = tuple(get_cut(spec, cut).shape)
    name = triton_model_name(spec.name, cut, spec.weights_id)
    config = model_config(name, shape, len(spec.labels), options)
    folder = Path(repository) / name
    if folder.exists() and not overwrite:
        raise ConfigError(f"{folder} exists (give --overwrite to replace it)")
    Path(repository).mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repository))
    partial.chmod(0o755)  # mkdtemp's 0700 would hide the model from a Triton of another user
    try:
        _write_tail(spec, cut, name, shape, config, partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)
    return folder


def _write_tail(
    spec: Any, cut: str, name: str, shape: Tuple[int, ...], config: Any, folder: Path
) -> None:
    from edgecloud.partition import split
    from edgecloud.quantize.export import EXPORT_OPSET, export_onnx

    _head, tail = split(spec, cut)
    onnx_path = export_onnx(  # the exporter's own opset: no down-conversion of the pooling
        tail,
        shape,
        folder / "1" / "model.onnx",
        opset=EXPORT_OPSET,
        names=(INPUT_NAME, OUTPUT_NAME),
        what="tail",
    )
    text = render_config(config)
    parse_config(text)  # what Triton will read
    (folder / "config.pbtxt").write_text(text)
    write_manifest(
        folder / MANIFEST,
        {
            "format": FORMAT,
            "name": name,
            "model": spec.name,
            "cut": cut,
            "weights_id": spec.weights_id,
            "shape": list(shape),
            "classes": len(spec.labels),
            "onnx_sha256": sha256_file(onnx_path),
        },
    )


def read_tail(folder: Union[str, Path]) -> Dict[str, Any]:
    """The manifest of an exported tail, after checking its config and the ONNX file's hash."""
    folder = Path(folder)
    manifest = read_manifest(folder / MANIFEST, (FORMAT,))
    config_path = folder / "config.pbtxt"
    if not config_path.is_file():
        raise ArtifactError(f"{config_path} does not exist")
    config = parse_config(config_path.read_text())
    if config.name != folder.name or config.name != manifest.get("name"):
        raise ArtifactError(f"{folder}: config name {config.name!r} != folder / manifest name")
    onnx_path = folder / "1" / "model.onnx"
    if not onnx_path.is_file() or sha256_file(onnx_path) != manifest.get("onnx_sha256"):
        raise ArtifactError(f"{onnx_path} is missing or does not match its manifest's sha256")
    return manifest
