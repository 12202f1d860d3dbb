"""The cloud receiver daemon: ``CloudServer(config)`` (``edgecloud serve``).

Imported lazily, so that a decode worker process can use ``edgecloud.cloud.decode`` without
loading torch.
"""

from __future__ import annotations

from edgecloud.lazy import lazy_exports

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

__getattr__ = lazy_exports(__name__, _EXPORTS)
