"""How much the tail's answer moves per unit of noise in each feature channel.

For bit allocation (:mod:`edgecloud.codec.allocation`). Two probes per channel, each adding
Gaussian noise of ``noise`` times the channel's standard deviation to that channel alone of
real features and dividing the mean KL divergence of the tail's softmax (against the clean
output) by the noise variance:

* **element**: independent noise at every position of the map;
* **pooled**: one offset per image over the whole map.

Quantization error has both parts (coarse steps move a whole map at once), and a network that
pools (every classifier here) is far more sensitive to the second: on EfficientNet-Lite0's
``blocks`` features the pooled sensitivity is ~18x the element one.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch


def channel_sensitivity(
    tail: Callable[[torch.Tensor], torch.Tensor],
    features: np.ndarray,
    noise: float = 0.5,
    images: int = 32,
    seed: int = 0,
    progress: Optional[Callable[[int], None]] = None,
) -> np.ndarray:
    """Sensitivity (2, C) of ``tail`` to each channel of ``features`` (N, C, H, W): row 0
    element-wise, row 1 pooled; KL divergence (nats, mean over images) per unit of noise
    variance. Uses the first ``images`` features; ``progress`` is called with 1 per channel."""
    x = torch.as_tensor(np.asarray(features[:images], dtype=np.float32))
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"features must be (N, C, H, W), got shape {tuple(x.shape)}")
    generator = torch.Generator().manual_seed(seed)
    std = x.std(dim=(0, 2, 3))
    out = np.zeros((2, x.shape[1]), dtype=np.float64)
    with torch.inference_mode():
        ref = torch.log_softmax(tail(x).float(), dim=1)
        for c in range(x.shape[1]):
            if std[c] > 0:
                sigma = float(noise * std[c])
                for row, shape in enumerate(((len(x),) + x.shape[2:], (len(x), 1, 1))):
                    noisy = x.clone()
                    noisy[:, c] += sigma * torch.randn(shape, generator=generator)
                    logp = torch.log_softmax(tail(noisy).float(), dim=1)
                    kl = (ref.exp() * (ref - logp)).sum(dim=1).mean()
                    out[row, c] = max(float(kl), 0.0) / sigma**2
            if progress is not None:
                progress(1)
    return out
