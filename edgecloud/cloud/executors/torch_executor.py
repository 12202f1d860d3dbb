"""Tails in PyTorch on the daemon's device (CPU or CUDA)."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np
import torch

from edgecloud.cloud.executors.base import TailExecutor
from edgecloud.cloud.tails import TailEntry


class TorchExecutor(TailExecutor):
    name = "torch"

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def run(self, entry: TailEntry, features: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(features).to(self.device, non_blocking=True)
            return entry.tail(x).float().cpu().numpy()

    def describe(self) -> Dict[str, Any]:
        return {"executor": self.name, "device": str(self.device)}
