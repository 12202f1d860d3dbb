"""The cloud receiver daemon: ``CloudServer(config)`` (``edgecloud serve``).

Imported lazily, so that a decode worker process can use ``edgecloud.cloud.decode`` without
loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BatchingConfig": "edgecloud.cloud.config",
    "ModelConfig": "edgecloud.cloud.config",
    "ServerConfig": "edgecloud.cloud.config",
    "config_from_dict": "edgecloud.cloud.config",
    "load_config": "edgecloud.cloud.config",
    "CloudServer": "edgecloud.cloud.server",
    "TailRegistry": "edgecloud.cloud.tails",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edgecloud.cloud' has no attribute {name!r}")
