"""edgecloud: edge/cloud split inference for vision networks.

The public API is imported lazily so that ``import edgecloud`` (and the CLI's ``--help``)
stays fast: ``edgecloud.load_model`` imports torch on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "load_model": "edgecloud.models",
    "list_models": "edgecloud.models",
    "ModelSpec": "edgecloud.models",
    "Preprocessing": "edgecloud.models",
    "cut_points": "edgecloud.partition",
    "default_cut": "edgecloud.partition",
    "get_cut": "edgecloud.partition",
    "split": "edgecloud.partition",
    "CutPoint": "edgecloud.partition",
    "ImageFolder": "edgecloud.datasets",
    "make_loader": "edgecloud.datasets",
    "evaluate": "edgecloud.experiments.evaluate",
    "FeatureCodec": "edgecloud.codec",
    "CodecCalibration": "edgecloud.codec",
    "HeadRunner": "edgecloud.backends",
    "create_head_runner": "edgecloud.backends",
    "EdgeClient": "edgecloud.edge",
    "CloudServer": "edgecloud.cloud",
    "ServerConfig": "edgecloud.cloud",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edgecloud' has no attribute {name!r}")
