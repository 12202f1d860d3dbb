"""Cut-point discovery, head/tail construction and profiling."""

from __future__ import annotations

from edgecloud.partition.graph import (
    DEFAULT_CUTS,
    CutPoint,
    Partitioner,
    cut_points,
    default_cut,
    get_cut,
    resolve_cut,
    split,
)

__all__ = [
    "DEFAULT_CUTS",
    "CutPoint",
    "Partitioner",
    "cut_points",
    "default_cut",
    "get_cut",
    "resolve_cut",
    "split",
]
