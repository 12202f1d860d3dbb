"""Tail executors: what runs the tail of a (model, cut) on a batch of decoded features."""

from __future__ import annotations

from edgecloud.cloud.executors.base import TailExecutor
from edgecloud.cloud.executors.torch_executor import TorchExecutor

__all__ = ["TailExecutor", "TorchExecutor"]
