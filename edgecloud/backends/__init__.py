"""Head runners behind one interface: ``create_head_runner(backend, spec, cut, ...)``.

Backends: ``torch`` (fp32 reference), ``onnxruntime`` (CPU/CUDA, fp32 or the INT8 QDQ graph of
a calibration), ``tensorrt`` (engine built from the QDQ ONNX; needs TensorRT, PyCUDA, a GPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from edgecloud.backends.base import HeadRunner
from edgecloud.errors import BackendUnavailableError

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def create_head_runner(
    backend: str,
    spec,
    cut: str,
    *,
    int8: bool = False,
    calibration: Optional[Union[str, Path]] = None,
    device: Optional[str] = None,
    threads: Optional[int] = None,
    **options,
) -> HeadRunner:
    """A ready :class:`HeadRunner` for the head of ``spec`` (a ModelSpec) at ``cut``.

    ``int8`` runs the calibrated QDQ graph (``calibration``: a directory made by
    ``edgecloud calibrate``; default ``calibration/<model>/<cut>``). ``options`` go to the
    backend (onnxruntime: ``int8_graph``; tensorrt: ``fp16``, ``dla_core``, ``max_batch``,
    ``opt_batch``, ``engine_dir``, ``implicit_int8``, ``workspace_mb``).
    """
    if backend == "torch":
        from edgecloud.backends.torch_backend import TorchHeadRunner

        if int8:
            raise BackendUnavailableError(
                "the torch backend runs fp32 only; use --backend onnxruntime or tensorrt for INT8"
            )
        if options:
            raise TypeError(f"torch backend: unexpected options {sorted(options)}")
        return TorchHeadRunner(spec, cut, device=device, threads=threads)
    if backend == "onnxruntime":
        from edgecloud.backends.onnxruntime_backend import OnnxRuntimeHeadRunner

        return OnnxRuntimeHeadRunner(
            spec, cut, int8=int8, calibration=calibration, device=device, threads=threads, **options
        )
    if backend == "tensorrt":
        from edgecloud.backends.tensorrt_backend import TensorRTHeadRunner

        return TensorRTHeadRunner(
            spec, cut, int8=int8, calibration=calibration, device=device, **options
        )
    raise BackendUnavailableError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "HeadRunner", "create_head_runner"]
