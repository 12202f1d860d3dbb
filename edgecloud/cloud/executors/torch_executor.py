"""Tails in PyTorch on the daemon's device (CPU or CUDA), in fp32 or fp16.

BatchNorms are folded into the convolutions before them (eager PyTorch does not do it
itself; ONNX Runtime and TensorRT do). On CUDA each tail thread has its own stream, and the
decode pool's shared-memory slots are page-locked (``cudaHostRegister``): the copy of a batch
to the GPU is DMA straight from the slot the decode worker wrote, and runs while another
thread's batch computes.
"""

from __future__ import annotations

import copy
import threading
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from edgecloud.cloud.executors.base import TailExecutor
from edgecloud.cloud.tails import TailEntry
from edgecloud.errors import ConfigError
from edgecloud.partition.fold import fold_batch_norms

PRECISIONS = ("fp32", "fp16")


class TorchExecutor(TailExecutor):
    """``precision="fp16"`` runs the tails in half precision with channels-last tensors (for
    GPUs: on a CPU it works but is slow). Logits come back as float32 either way."""

    name = "torch"

    def __init__(self, device: torch.device, precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.device = device
        self.precision = precision
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        self._prepared: Dict[int, torch.nn.Module] = {}
        self._cuda = self.device.type == "cuda"
        self._local = threading.local()  # a CUDA stream per tail thread
        self._pinned: List[int] = []

    def _tail(self, entry: TailEntry) -> torch.nn.Module:
        """The tail of ``entry`` as it runs here (made once): BatchNorms folded into the
        convolutions before them, in this executor's precision and layout."""
        tail = self._prepared.get(id(entry))
        if tail is None:
            tail = entry.tail
            if isinstance(tail, torch.fx.GraphModule):
                tail = fold_batch_norms(tail)
            if self.precision == "fp16":  # a copy: the layers are shared with entry.tail
                tail = copy.deepcopy(tail).to(self._dtype).to(memory_format=torch.channels_last)
            self._prepared[id(entry)] = tail
        return tail

    def run(self, entry: TailEntry, features: np.ndarray) -> np.ndarray:
        tail = self._tail(entry)
        if not self._cuda:
            return self._forward(tail, torch.from_numpy(features))
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(stream):
            x = torch.from_numpy(features).to(self.device, non_blocking=True)
            return self._forward(tail, x)  # .cpu() waits for the stream: the slot is free after

    def _forward(self, tail: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            if self.precision == "fp16":
                x = x.to(self._dtype)
                if x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
            return tail(x).float().cpu().numpy()

    def pin(self, buffers: Sequence[np.ndarray]) -> None:
        if not self._cuda:
            return
        cudart = torch.cuda.cudart()
        for buffer in buffers:
            pointer = buffer.ctypes.data
            if int(cudart.cudaHostRegister(pointer, buffer.nbytes, 0)) == 0:  # cudaSuccess
                self._pinned.append(pointer)

    def close(self) -> None:
        if self._pinned:
            cudart = torch.cuda.cudart()
            for pointer in self._pinned:
                cudart.cudaHostUnregister(pointer)
            self._pinned.clear()

    def describe(self) -> Dict[str, Any]:
        return {"executor": self.name, "device": str(self.device), "precision": self.precision}
