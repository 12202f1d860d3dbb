"""Is there a transform-coding gain across channels? PCA (KLT) of the cut's channels against
coding the channels themselves, at equal quantization step.

The KLT basis and mean are fitted on the LAST ``--calib-images`` shared images (each spatial
position is one sample of C channels); the first ``--images`` are evaluated. Both sides are
quantized with the same uniform step (MSE-optimal across components at high rate); the rate is
the empirical entropy of each component's (channel's) symbols, per element -- an estimate of
what a per-channel entropy coder reaches, the same for both. Fidelity is top-1 agreement of
the tail on the reconstruction with the uncompressed model. Writes JSON.

    python benchmarks/klt_gain.py --cut blocks      # -> benchmarks/results/klt_blocks.json
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, List

import numpy as np
import torch
from common import DATA, RESULTS, machine, write_result

from edgecloud.datasets import ImageFolder
from edgecloud.models import load_model
from edgecloud.partition import split


def entropy_bits_per_element(symbols: np.ndarray) -> float:
    """Sum over columns of each column's empirical entropy, per element."""
    bits = 0.0
    for column in symbols.T:
        _, counts = np.unique(column, return_counts=True)
        bits -= float((counts * np.log2(counts / counts.sum())).sum())
    return bits / symbols.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cut", default="blocks")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--steps", default="1.5,2,2.5,3,3.5,4")
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    spec = load_model("efficientnet_lite0")
    head, tail = split(spec, args.cut)
    dataset = ImageFolder(DATA, spec.preprocessing)
    n = len(dataset)

    def features(indices: List[int]) -> np.ndarray:
        x = torch.stack([dataset[i][0] for i in indices])
        with torch.inference_mode():
            return head(x).numpy()

    calib = features(list(range(n - args.calib_images, n)))
    evaluate = features(list(range(args.images)))
    shape = evaluate.shape
    channels = shape[1]

    def rows(f: np.ndarray) -> np.ndarray:  # (N*H*W, C)
        return f.transpose(0, 2, 3, 1).reshape(-1, channels).astype(np.float64)

    def top1(r: np.ndarray) -> np.ndarray:
        f = r.reshape(shape[0], shape[2], shape[3], channels).transpose(0, 3, 1, 2)
        with torch.inference_mode():
            return tail(torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32))).argmax(1)

    x_cal, x = rows(calib), rows(evaluate)
    mean = x_cal.mean(0)
    eigenvalues, basis = np.linalg.eigh(np.cov((x_cal - mean).T))
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, basis = eigenvalues[order], basis[:, order]
    energy = np.cumsum(eigenvalues) / eigenvalues.sum()
    reference = top1(x).numpy()

    results: List[Dict[str, Any]] = []
    for step in (float(s) for s in args.steps.split(",")):
        for name, forward, inverse in (
            ("channels", lambda v: v - mean, lambda q: q + mean),
            ("klt", lambda v: (v - mean) @ basis, lambda q: q @ basis.T + mean),
        ):
            symbols = np.round(forward(x) / step)
            recon = inverse(symbols * step)
            row = {
                "transform": name,
                "step": step,
                "bits_per_element": round(entropy_bits_per_element(symbols), 4),
                "mse": round(float(((recon - x) ** 2).mean()), 5),
                "fidelity": round(float((top1(recon).numpy() == reference).mean()), 4),
            }
            print(row)
            results.append(row)
    write_result(
        args.json or str(RESULTS / f"klt_{args.cut}.json"),
        {
            "benchmark": "klt_gain",
            "machine": machine(),
            "cut": args.cut,
            "shape": list(shape[1:]),
            "images": args.images,
            "calib_images": args.calib_images,
            "energy_in_top_k": {
                str(k): round(float(energy[k - 1]), 4)
                for k in (8, 16, 32, 64, 128, 192, 256)
                if k <= channels
            },
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
