"""Head runners behind one interface: ``create_head_runner(backend, spec, cut, ...)``.

Backends: ``torch`` (fp32 reference), ``onnxruntime`` (CPU/CUDA, fp32 or the INT8 QDQ graph of
a calibration), ``tensorrt`` (engine built from the QDQ ONNX; needs TensorRT, PyCUDA, a GPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from edgecloud.backends.base import HeadRunner
from edgecloud.errors import BackendUnavailableError, CalibrationError

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
    encoder: Any = None,
    **options,
) -> HeadRunner:
    """A ready :class:`HeadRunner` for the head of ``spec`` (a ModelSpec) at ``cut``.

    ``int8`` runs the calibrated QDQ graph (``calibration``: a directory made by
    ``edgecloud calibrate``; default ``calibration/<model>/<cut>``). ``options`` go to the
    backend (onnxruntime: ``int8_graph``; tensorrt: ``fp16``, ``dla_core``, ``max_batch``,
    ``opt_batch``, ``engine_dir``, ``implicit_int8``, ``workspace_mb``). With ``encoder`` (a
    :class:`~edgecloud.codec.LearnedCodec` for this cut) the runner runs the head and the
    codec's encoder as one graph and returns latents (``FeatureCodec.encode_latents``).
    """
    if encoder is not None:
        check_encoder(spec, cut, encoder)
    if backend == "torch":
        from edgecloud.backends.torch_backend import TorchHeadRunner

        if int8:
            raise BackendUnavailableError(
                "the torch backend runs fp32 only; use --backend onnxruntime or tensorrt for INT8"
            )
        if options:
            raise TypeError(f"torch backend: unexpected options {sorted(options)}")
        return TorchHeadRunner(spec, cut, device=device, threads=threads, encoder=encoder)
    if backend == "onnxruntime":
        from edgecloud.backends.onnxruntime_backend import OnnxRuntimeHeadRunner

        return OnnxRuntimeHeadRunner(
            spec,
            cut,
            int8=int8,
            calibration=calibration,
            device=device,
            threads=threads,
            encoder=encoder,
            **options,
        )
    if backend == "tensorrt":
        from edgecloud.backends.tensorrt_backend import TensorRTHeadRunner

        return TensorRTHeadRunner(
            spec, cut, int8=int8, calibration=calibration, device=device, encoder=encoder, **options
        )
    raise BackendUnavailableError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")


def check_encoder(spec, cut: str, encoder: Any) -> None:
    """CalibrationError unless the learned codec ``encoder`` codes the feature of ``spec`` at
    ``cut`` (shape, and model and cut where its file records them)."""
    from edgecloud.partition import get_cut

    shape = get_cut(spec, cut).shape
    config = encoder.config
    trained_on = (encoder.meta.get("model", spec.name), encoder.meta.get("cut", cut))
    if (config.channels, config.height, config.width) != shape or trained_on != (spec.name, cut):
        raise CalibrationError(
            f"learned codec {encoder.name} was trained for {trained_on[0]} at cut "
            f"{trained_on[1]!r}, ({config.channels}, {config.height}, {config.width}) features; "
            f"this head is {spec.name} at {cut!r}, {shape}"
        )


__all__ = ["BACKENDS", "HeadRunner", "check_encoder", "create_head_runner"]
