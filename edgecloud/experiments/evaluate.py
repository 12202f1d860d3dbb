"""Top-1/top-5 evaluation of any ``images -> logits`` function over a data loader."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable

import numpy as np
import torch
from tqdm import tqdm

from edgecloud.datasets import UNLABELLED, Batch


@dataclass
class EvalResult:
    images: int
    top1: float  # over labelled images; NaN if none are labelled
    top5: float
    images_per_s: float
    predictions: np.ndarray  # top-1 class index per image
    labels: np.ndarray  # -1 where unknown

    def fidelity(self, reference: EvalResult) -> float:
        """Fraction of images whose top-1 class equals the reference's (e.g. uncompressed)."""
        if len(reference.predictions) != len(self.predictions):
            raise ValueError("fidelity needs results on the same images")
        return float(np.mean(self.predictions == reference.predictions))

    def summary(self) -> Dict[str, float]:
        return {
            "images": self.images,
            "top1": self.top1,
            "top5": self.top5,
            "images_per_s": self.images_per_s,
        }


def evaluate(
    predict: Callable[[torch.Tensor], torch.Tensor],
    loader: Iterable[Batch],
    desc: str = "eval",
    progress: bool = True,
) -> EvalResult:
    """Run ``predict`` (images -> logits) on every batch and score it."""
    top5_hits, predictions, labels = [], [], []
    compute_s = 0.0
    total = len(loader) if hasattr(loader, "__len__") else None
    with torch.inference_mode():
        for images, batch_labels, _ in tqdm(
            loader, desc=desc, total=total, disable=not progress, unit="batch"
        ):
            start = time.perf_counter()
            logits = torch.as_tensor(predict(images))
            compute_s += time.perf_counter() - start
            top5 = logits.topk(5, dim=1).indices
            predictions.append(top5[:, 0].numpy())
            top5_hits.append((top5 == batch_labels[:, None]).any(dim=1).numpy())
            labels.append(batch_labels.numpy())
    pred = np.concatenate(predictions)
    lab = np.concatenate(labels)
    hits5 = np.concatenate(top5_hits)
    known = lab != UNLABELLED
    return EvalResult(
        images=len(pred),
        top1=float(np.mean(pred[known] == lab[known])) if known.any() else float("nan"),
        top5=float(np.mean(hits5[known])) if known.any() else float("nan"),
        images_per_s=len(pred) / compute_s if compute_s > 0 else float("nan"),
        predictions=pred,
        labels=lab,
    )
