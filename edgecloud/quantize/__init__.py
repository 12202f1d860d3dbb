"""INT8 post-training quantization of heads: ONNX export, QDQ calibration, TensorRT rules."""

from __future__ import annotations

from edgecloud.quantize.calibrate import (
    METHODS,
    CalibrationArtifacts,
    artifact_dir,
    calibrate,
    calibrate_module,
)
from edgecloud.quantize.cpu_graph import to_uint8_activations
from edgecloud.quantize.export import ExportError, export_onnx
from edgecloud.quantize.trt_cache import format_cache, parse_cache
from edgecloud.quantize.validate import Violation, check_qdq, validate_qdq

__all__ = [
    "METHODS",
    "CalibrationArtifacts",
    "ExportError",
    "Violation",
    "artifact_dir",
    "calibrate",
    "calibrate_module",
    "check_qdq",
    "export_onnx",
    "format_cache",
    "parse_cache",
    "to_uint8_activations",
    "validate_qdq",
]
