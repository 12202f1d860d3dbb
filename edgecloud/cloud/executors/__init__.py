"""Tail executors: what runs the tail of a (model, cut) on a batch of decoded features."""

from __future__ import annotations

import torch

from edgecloud.cloud.config import EXECUTORS
from edgecloud.cloud.executors.base import ExecutorUnavailable, TailExecutor
from edgecloud.cloud.executors.onnxruntime_executor import OnnxRuntimeExecutor
from edgecloud.cloud.executors.torch_executor import TorchExecutor
from edgecloud.cloud.executors.triton_executor import TritonExecutor
from edgecloud.errors import ConfigError


def make_executor(
    kind: str,
    device: torch.device,
    *,
    precision: str = "fp32",
    threads: int = 0,
    triton_url: str = "",
    triton_timeout_s: float = 10.0,
) -> TailExecutor:
    """The executor a daemon's config names (``executor``): torch on ``device`` in
    ``precision``, ONNX Runtime on ``device`` with ``threads`` compute threads (0: its
    default), or a Triton server at ``triton_url``."""
    if kind == "torch":
        return TorchExecutor(device, precision=precision)
    if kind == "onnxruntime":
        return OnnxRuntimeExecutor(device, threads=threads or None)
    if kind == "triton":
        return TritonExecutor(triton_url, triton_timeout_s)
    raise ConfigError(f"unknown executor {kind!r}; choose from {', '.join(EXECUTORS)}")


__all__ = [
    "EXECUTORS",
    "ExecutorUnavailable",
    "OnnxRuntimeExecutor",
    "TailExecutor",
    "TorchExecutor",
    "TritonExecutor",
    "make_executor",
]
