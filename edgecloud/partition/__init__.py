"""Cut-point discovery, head/tail construction and profiling."""

from __future__ import annotations

from edgecloud.partition.graph import (
    CutPoint,
    Partitioner,
    cut_points,
    default_cut,
    get_cut,
    resolve_cut,
    split,
)

__all__ = [
    "CutPoint",
    "Partitioner",
    "cut_points",
    "default_cut",
    "get_cut",
    "resolve_cut",
    "split",
]
