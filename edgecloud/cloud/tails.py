"""The tails a daemon serves, loaded once at start-up: (model, cut) -> tail module."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

from edgecloud.cloud.config import ModelConfig
from edgecloud.errors import BackendUnavailableError
from edgecloud.transport.protocol import BadRequest, ErrorCode

log = logging.getLogger(__name__)


@dataclass
class TailEntry:
    model: str
    cut: str
    weights_id: str
    shape: Tuple[int, ...]  # feature shape without batch
    tail: torch.nn.Module
    labels: List[str]


def resolve_device(device: str) -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N``; raises if CUDA is asked for but absent."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {device!r} requested but CUDA is not available")
    return dev


class TailRegistry:
    """The tails a daemon serves; each model is loaded once and split at each cut."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = resolve_device(device)
        self._entries: Dict[Tuple[str, str], TailEntry] = {}
        self._models: Dict[str, List[str]] = {}
        self._specs: Dict[str, Any] = {}

    @classmethod
    def from_config(cls, models: Sequence[ModelConfig], device: str = "cpu") -> TailRegistry:
        from edgecloud.models import load_model
        from edgecloud.partition import default_cut

        registry = cls(device)
        for cfg in models:
            spec = load_model(cfg.name, weights=cfg.weights)
            served = spec.record.serve_cuts() if spec.record else []
            for cut in cfg.cuts or served or [default_cut(spec)]:
                registry.add(spec, cut)
        return registry

    def add(self, spec: Any, cut: str) -> TailEntry:
        """Serve the tail of ``spec`` (a ``ModelSpec``) after ``cut``."""
        from edgecloud.partition import get_cut, split

        cut_point = get_cut(spec, cut)
        _head, tail = split(spec, cut)
        entry = TailEntry(
            spec.name,
            cut,
            spec.weights_id,
            tuple(cut_point.shape),
            tail.to(self.device).eval(),
            list(spec.labels),
        )
        self._entries[(spec.name, cut)] = entry
        self._models.setdefault(spec.name, []).append(cut)
        self._specs[spec.name] = spec
        log.info(
            "event=tail_loaded model=%s cut=%s shape=%s weights_id=%s device=%s",
            spec.name,
            cut,
            "x".join(map(str, cut_point.shape)),
            spec.weights_id,
            self.device,
        )
        return entry

    def get(self, model: str, cut: str) -> TailEntry:
        """The tail for (model, cut); :class:`BadRequest` naming what is served otherwise."""
        if model not in self._models:
            raise BadRequest(
                ErrorCode.UNKNOWN_MODEL,
                f"model {model!r} is not served (served: {sorted(self._models)})",
            )
        entry = self._entries.get((model, cut))
        if entry is None:
            raise BadRequest(
                ErrorCode.UNKNOWN_CUT,
                f"cut {cut!r} of {model!r} is not served (served: {self._models[model]})",
            )
        return entry

    def spec(self, model: str) -> Any:
        """The ``ModelSpec`` a served model was loaded from."""
        return self._specs[model]

    def entries(self) -> List[TailEntry]:
        return list(self._entries.values())

    def max_elements(self) -> int:
        """Elements of the largest feature served (bounds what a request may carry)."""
        return max(int(np.prod(e.shape)) for e in self._entries.values())

    def describe(self) -> Dict[str, Any]:
        """What a ``ping`` reports: model -> cut -> feature shape and weights id."""
        out: Dict[str, Any] = {}
        for (model, cut), entry in self._entries.items():
            out.setdefault(model, {})[cut] = {
                "shape": list(entry.shape),
                "weights_id": entry.weights_id,
            }
        return out
