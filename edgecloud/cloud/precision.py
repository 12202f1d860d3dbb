"""Is a tail precision below fp32 good enough? Its top-1 agreement with fp32 on real images.

Run at start-up when ``precision`` is not fp32: the head (fp32, CPU) makes the features of
the first ``images`` images of a folder, every tail runs them in fp32 and through the
executor, and the share of images whose top-1 class agrees is logged and reported by ``ping``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from edgecloud.cloud.executors.base import TailExecutor
from edgecloud.cloud.tails import TailRegistry
from edgecloud.errors import ConfigError

log = logging.getLogger("edgecloud.serve")
#: below this top-1 agreement with fp32 the daemon warns
AGREEMENT_WARNING = 0.99


def check_precision(
    registry: TailRegistry, executor: TailExecutor, data: str, images: int
) -> Dict[str, Any]:
    """``{"precision", "data", "tails": {"model/cut": {"images", "top1_agreement",
    "max_abs_logit_diff"}}}``; ``{"checked": False}`` (and a warning) without ``data``."""
    precision = executor.describe().get("precision", "")
    if not data:
        log.warning(
            "event=precision_unchecked precision=%s message=%s",
            precision,
            '"give precision_check_data (serve --data DIR) to check it against fp32"',
        )
        return {"precision": precision, "checked": False}
    folder = Path(data)
    if not folder.exists():
        raise ConfigError(f"precision check images {folder} do not exist")
    from edgecloud.datasets import ImageFolder
    from edgecloud.partition import split

    tails: Dict[str, Any] = {}
    for entry in registry.entries():
        spec = registry.spec(entry.model)
        dataset = ImageFolder(folder, spec.preprocessing, limit=images)
        x = torch.stack([dataset[i][0] for i in range(len(dataset))])
        head, _tail = split(spec, entry.cut)
        with torch.inference_mode():
            features = head.eval()(x).numpy()
            reference = entry.tail(torch.from_numpy(features).to(registry.device)).cpu().numpy()
        logits = executor.run(entry, features)
        agreement = float(np.mean(logits.argmax(1) == reference.argmax(1)))
        result = {
            "images": len(x),
            "top1_agreement": round(agreement, 4),
            "max_abs_logit_diff": round(float(np.abs(logits - reference).max()), 4),
        }
        tails[f"{entry.model}/{entry.cut}"] = result
        level = logging.INFO if agreement >= AGREEMENT_WARNING else logging.WARNING
        log.log(
            level,
            "event=precision_check precision=%s model=%s cut=%s images=%d top1_agreement=%.4f "
            "max_abs_logit_diff=%.4f",
            precision,
            entry.model,
            entry.cut,
            result["images"],
            agreement,
            result["max_abs_logit_diff"],
        )
    return {"precision": precision, "checked": True, "data": str(folder), "tails": tails}
