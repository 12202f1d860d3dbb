"""The edge runtime: ``EdgeClient`` (``edgecloud edge``) and its frame sources."""

from __future__ import annotations

from edgecloud.edge.adapt import AdaptConfig
from edgecloud.edge.client import EdgeClient, EdgeResult
from edgecloud.edge.refine import RefineConfig
from edgecloud.edge.sources import iter_frames

__all__ = ["AdaptConfig", "EdgeClient", "EdgeResult", "RefineConfig", "iter_frames"]
