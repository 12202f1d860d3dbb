"""fp32 reference head in PyTorch."""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from edgecloud.backends.base import HeadRunner, shape_tuple
from edgecloud.errors import BackendUnavailableError


class TorchHeadRunner(HeadRunner):
    backend = "torch"

    def __init__(
        self,
        spec,
        cut: str,
        *,
        device: Optional[str] = None,
        threads: Optional[int] = None,
        encoder: Any = None,
    ) -> None:
        import torch

        from edgecloud.partition import split

        self.model, self.cut = spec.name, cut
        self.input_shape = shape_tuple(spec.input_shape)
        self.device = torch.device(device or "cpu")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("torch backend: device 'cuda' requested, no CUDA GPU")
        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        head, _ = split(spec, cut)
        if encoder is not None:
            head = torch.nn.Sequential(head, encoder.encoder_module())
        self.encoder = encoder
        self.head = head.eval().to(self.device)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.head(torch.from_numpy(batch).to(self.device))
        return out.float().cpu().numpy()

    def describe(self) -> Dict[str, Any]:
        return {**super().describe(), "device": str(self.device), "threads": self.threads}
