"""Feature tensors as float32 numpy arrays in the codec's (N, C, S) working layout."""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from edgecloud.errors import CodecSpecError


def to_float32(feature: Any) -> np.ndarray:
    """numpy array or torch tensor -> contiguous float32 numpy array."""
    if hasattr(feature, "detach"):  # torch.Tensor, without importing torch
        feature = feature.detach().cpu().numpy()
    arr = np.ascontiguousarray(np.asarray(feature), dtype=np.float32)
    if arr.ndim == 0 or arr.ndim > 4 or arr.size == 0:
        raise CodecSpecError(
            f"feature must have shape (C,H,W), (N,C,H,W), (N,F) or (F,), got {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise CodecSpecError("feature contains NaN or infinite values")
    return arr


def working_view(shape: Tuple[int, ...]) -> Tuple[int, int, int, int]:
    """Tensor shape -> (N, C, H, W): (C,H,W) and (N,C,H,W) as is; (N,F) and (F,) as 1x1 maps."""
    if len(shape) == 4:
        return shape[0], shape[1], shape[2], shape[3]
    if len(shape) == 3:
        return 1, shape[0], shape[1], shape[2]
    if len(shape) == 2:
        return shape[0], shape[1], 1, 1
    return 1, shape[0], 1, 1


def to_ncs(arr: np.ndarray) -> np.ndarray:
    n, c, h, w = working_view(arr.shape)
    return arr.reshape(n, c, h * w)
