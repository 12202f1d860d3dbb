"""One record per model, filled by a decorator next to the architecture (like timm's
``default_cfgs``): how to build it, its weights, preprocessing, and the cuts and codecs
edgecloud recommends for it. Every command, the daemon's served cuts and the shipped codec
presets read their defaults from here."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple

from edgecloud.errors import UnknownModelError

if TYPE_CHECKING:  # the records themselves do not need torch
    import torch

    from edgecloud.models.preprocessing import Preprocessing

#: modules whose @register_model decorators fill the registry (imported on first use)
ARCHITECTURE_MODULES = ("edgecloud.models.efficientnet_lite", "edgecloud.models.torchvision_models")

#: the model every command uses when none is given
DEFAULT_MODEL = "efficientnet_lite0"
#: codec of a cut that has no recommended (calibrated) codec: near-lossless, needs nothing
FALLBACK_CODEC = "q8-ncc-zstd"


@dataclass(frozen=True)
class ModelRecord:
    """Everything edgecloud knows about one registered model."""

    name: str
    build: Callable[[], torch.nn.Module]
    preprocessing: Preprocessing
    description: str
    packaged_weights: Optional[Callable[[], Path]] = None
    #: the cut every command uses when none is given (None: the middle cut point)
    default_cut: Optional[str] = None
    #: cuts ``edgecloud serve`` loads when none are given (default: the default cut)
    served_cuts: Tuple[str, ...] = ()
    #: cut -> recommended codec spec; each has a calibration preset in edgecloud/presets
    codecs: Mapping[str, str] = field(default_factory=dict)
    #: cut -> coarse codec spec sent first when unsure answers are resent with the cut's
    #: recommended codec (``edgecloud edge --refine``); each has a preset too
    refine_codecs: Mapping[str, str] = field(default_factory=dict)

    def codec_for(self, cut: str) -> str:
        """The recommended codec at ``cut`` (a calibrated one where a preset ships)."""
        return self.codecs.get(cut, FALLBACK_CODEC)

    def serve_cuts(self) -> List[str]:
        return list(self.served_cuts or ([self.default_cut] if self.default_cut else []))


_RECORDS: Dict[str, ModelRecord] = {}


def register_model(
    name: str,
    *,
    preprocessing: Preprocessing,
    description: str,
    packaged_weights: Optional[Callable[[], Path]] = None,
    default_cut: Optional[str] = None,
    served_cuts: Tuple[str, ...] = (),
    codecs: Optional[Mapping[str, str]] = None,
    refine_codecs: Optional[Mapping[str, str]] = None,
) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Decorator for a function that builds the (untrained) architecture of ``name``."""

    def register(build: Callable[[], Any]) -> Callable[[], Any]:
        if name in _RECORDS:
            raise ValueError(f"model {name!r} is registered twice")
        _RECORDS[name] = ModelRecord(
            name=name,
            build=build,
            preprocessing=preprocessing,
            description=description,
            packaged_weights=packaged_weights,
            default_cut=default_cut,
            served_cuts=served_cuts,
            codecs=dict(codecs or {}),
            refine_codecs=dict(refine_codecs or {}),
        )
        return build

    return register


def _registered() -> Dict[str, ModelRecord]:
    for module in ARCHITECTURE_MODULES:
        importlib.import_module(module)
    return _RECORDS


def model_record(name: str) -> ModelRecord:
    """The record of a registered model; :class:`UnknownModelError` lists the known ones."""
    record = _registered().get(name)
    if record is None:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return record


def list_models() -> List[str]:
    """Names accepted by ``load_model`` and ``--model``."""
    return sorted(_registered())


def all_records() -> List[ModelRecord]:
    return [_RECORDS[name] for name in list_models()]
