"""ONNX Runtime sessions as edgecloud runs them, for heads on the edge and tails in the cloud."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Union

from edgecloud.errors import BackendUnavailableError


def session_options(ort: Any, threads: Optional[int]) -> Any:
    """Full graph optimization, sequential execution, ``threads`` compute threads, and no
    spinning: by default ONNX Runtime's threads busy-wait after each run, which on a small
    edge CPU steals the cores the encoder and the transport need (measured on 2 cores: a
    head alternating with other work ran 2x slower, fp32 16.7 vs 6.8 ms at Lite0 blocks)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def providers(ort: Any, device: Optional[str]) -> List[Any]:
    """Execution providers for ``device``: ``cpu`` (or None), ``cuda`` or ``cuda:N``."""
    if device in (None, "cpu"):
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailableError(
                "onnxruntime: CUDAExecutionProvider is not available (install onnxruntime-gpu)"
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise BackendUnavailableError(f"onnxruntime: unknown device {device!r}")


def make_session(path: Union[str, Path], device: Optional[str], threads: Optional[int]) -> Any:
    """An inference session of the ONNX file at ``path`` on ``device``."""
    import onnxruntime as ort

    return ort.InferenceSession(
        str(path), session_options(ort, threads), providers=providers(ort, device)
    )
