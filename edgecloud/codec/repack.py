"""Channel repacking: NCC order, CCD greedy ordering, CT near-square tiling, pruning masks."""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np


def ccd_permutation(x: np.ndarray) -> np.ndarray:
    """Greedy nearest-channel order (Chen et al. CCD) from calibration features (N, C, S).

    Starts at channel 0; the next channel is the remaining one nearest (L2) to the current one.
    """
    vectors = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1).astype(np.float64)
    sq = (vectors**2).sum(axis=1)
    dist = sq[:, None] + sq[None, :] - 2.0 * vectors @ vectors.T
    order = [0]
    remaining = np.ones(len(vectors), dtype=bool)
    remaining[0] = False
    while remaining.any():
        d = np.where(remaining, dist[order[-1]], np.inf)
        nxt = int(np.argmin(d))
        order.append(nxt)
        remaining[nxt] = False
    return np.asarray(order, dtype=np.int64)


def channel_order(permutation: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Indices of the transmitted channels, in transmission order."""
    permutation = np.asarray(permutation, dtype=np.int64)
    return permutation[np.asarray(keep, dtype=bool)[permutation]]


def tile_grid(channels: int) -> Tuple[int, int]:
    """(rows, cols) of the near-square tiling of ``channels`` tiles."""
    cols = max(1, math.ceil(math.sqrt(channels)))
    return max(1, math.ceil(channels / cols)), cols


def to_frame(sym: np.ndarray, height: int, width: int, tiled: bool) -> np.ndarray:
    """Symbols (N, C, H*W) -> one 2-D frame: tiles (CT) or channels stacked vertically (NCC/CCD).

    Images of a batch are stacked vertically; unused tiles are zero.
    """
    n, c = sym.shape[:2]
    planes = sym.reshape(n, c, height, width)
    if not tiled:
        return planes.reshape(n * c * height, width)
    rows, cols = tile_grid(c)
    padded = np.zeros((n, rows * cols, height, width), dtype=sym.dtype)
    padded[:, :c] = planes
    grid = padded.reshape(n, rows, cols, height, width).transpose(0, 1, 3, 2, 4)
    return grid.reshape(n * rows * height, cols * width)


def from_frame(frame: np.ndarray, n: int, c: int, height: int, width: int, tiled: bool):
    """Inverse of :func:`to_frame` -> symbols (N, C, H*W)."""
    if not tiled:
        return frame.reshape(n, c, height * width)
    rows, cols = tile_grid(c)
    grid = frame.reshape(n, rows, height, cols, width).transpose(0, 1, 3, 2, 4)
    return grid.reshape(n, rows * cols, height * width)[:, :c]


def frame_shape(n: int, c: int, height: int, width: int, tiled: bool) -> Tuple[int, int]:
    if not tiled:
        return n * c * height, width
    rows, cols = tile_grid(c)
    return n * rows * height, cols * width


def to_video_frames(sym: np.ndarray, height: int, width: int, tiled: bool) -> np.ndarray:
    """Symbols (N, C, H*W) -> the frames of a video: one tiled frame per image (CT), or one
    frame per channel, images one after the other (NCC/CCD)."""
    n, c = sym.shape[:2]
    if not tiled:
        return sym.reshape(n * c, height, width)
    return np.stack([to_frame(sym[i : i + 1], height, width, tiled=True) for i in range(n)])


def video_frames_shape(
    n: int, c: int, height: int, width: int, tiled: bool
) -> Tuple[int, int, int]:
    if not tiled:
        return n * c, height, width
    return (n, *frame_shape(1, c, height, width, tiled=True))


def from_video_frames(frames: np.ndarray, n: int, c: int, height: int, width: int, tiled: bool):
    """Inverse of :func:`to_video_frames` -> symbols (N, C, H*W)."""
    if not tiled:
        return frames.reshape(n, c, height * width)
    return np.concatenate(
        [from_frame(frames[i], 1, c, height, width, tiled=True) for i in range(n)]
    )
