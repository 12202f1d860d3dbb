"""The cloud receiver daemon: ``CloudServer(config)`` (``edgecloud serve``)."""

from __future__ import annotations

from edgecloud.cloud.config import (
    BatchingConfig,
    ModelConfig,
    ServerConfig,
    config_from_dict,
    load_config,
)
from edgecloud.cloud.server import CloudServer
from edgecloud.cloud.tails import TailRegistry

__all__ = [
    "BatchingConfig",
    "CloudServer",
    "ModelConfig",
    "ServerConfig",
    "TailRegistry",
    "config_from_dict",
    "load_config",
]
