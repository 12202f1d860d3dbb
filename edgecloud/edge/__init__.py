"""The edge runtime: ``EdgeClient`` (``edgecloud edge``) and its frame sources."""

from __future__ import annotations

from edgecloud.edge.client import EdgeClient, EdgeResult
from edgecloud.edge.sources import iter_frames

__all__ = ["EdgeClient", "EdgeResult", "iter_frames"]
