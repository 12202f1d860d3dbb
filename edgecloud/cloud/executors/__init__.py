"""Tail executors: what runs the tail of a (model, cut) on a batch of decoded features."""

from __future__ import annotations

from edgecloud.cloud.executors.base import ExecutorUnavailable, TailExecutor
from edgecloud.cloud.executors.torch_executor import TorchExecutor
from edgecloud.cloud.executors.triton_executor import TritonExecutor

EXECUTORS = ("torch", "triton")

__all__ = ["EXECUTORS", "ExecutorUnavailable", "TailExecutor", "TorchExecutor", "TritonExecutor"]
