"""Head latency/throughput: torch fp32 vs ONNX Runtime fp32 vs ONNX Runtime INT8 (QDQ).

INT8 variants, all from one calibration (``edgecloud calibrate``):
- ``ort-int8-qdq-signed``: the TensorRT graph (signed symmetric activations) as is;
- ``ort-int8-qdq-uint8-exact``: the same grid as uint8 with zero point 128 (Clip nodes kept);
- ``ort-int8-qdq-uint8``: the fast CPU graph the onnxruntime backend runs (uint8 activations,
  zero point 0 after ReLU6 so that Clip folds into the quantizer and Conv fuses).

Variants are timed in interleaved rounds (fair under background load); the JSON records
medians, images/s and ratios against torch fp32 and ONNX Runtime fp32.

    python benchmarks/bench_head.py --cut blocks.4 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np


def cpu_info() -> Dict[str, object]:
    info: Dict[str, object] = {"machine": platform.machine(), "python": platform.python_version()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        names = [
            line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line
        ]
        info["cpu"] = names[0] if names else ""
        info["logical_cpus"] = len(names)
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
        info["avx512_vnni"] = "avx512_vnni" in flags
        info["avx_vnni"] = " avx_vnni" in flags
    except OSError:
        pass
    if hasattr(os, "getloadavg"):  # other work on the machine skews every number
        info["load_average_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
    return info


def time_variants(
    variants: Dict[str, Callable[[], object]], rounds: int, per_round: int, warmup: int
) -> Dict[str, List[float]]:
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, List[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            for _ in range(per_round):
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--cut", action="append", help="cut (repeatable; default blocks.4)")
    parser.add_argument("--data", default="../shared/data/imagenet-samples")
    parser.add_argument("--batch", type=int, action="append", help="batch sizes (default 1, 8)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--calibration-images", type=int, default=64)
    parser.add_argument("--json", default="benchmarks/results/head.json")
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort
    import torch

    from edgecloud.backends import create_head_runner
    from edgecloud.datasets import ImageFolder
    from edgecloud.models import load_model
    from edgecloud.quantize import CalibrationArtifacts, artifact_dir, calibrate
    from edgecloud.quantize.cpu_graph import to_uint8_activations

    torch.set_num_threads(args.threads)
    spec = load_model(args.model)
    dataset = ImageFolder(args.data, spec.preprocessing)
    results = []
    for cut in args.cut or ["blocks.4"]:
        directory = artifact_dir(spec.name, cut)
        try:
            art = CalibrationArtifacts.load(directory)
            art.check(spec.name, cut, spec.weights_id)
        except Exception:  # missing or stale: calibrate now
            art = calibrate(spec, cut, dataset, num_images=args.calibration_images)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        exact = to_uint8_activations(onnx.load(str(art.qdq_onnx)), unsigned_after_relu=False)
        exact_sess = ort.InferenceSession(
            exact.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        runners = {
            "torch-fp32": create_head_runner("torch", spec, cut, threads=args.threads),
            "ort-fp32": create_head_runner("onnxruntime", spec, cut, threads=args.threads),
            "ort-int8-qdq-signed": create_head_runner(
                "onnxruntime",
                spec,
                cut,
                int8=True,
                calibration=art.directory,
                threads=args.threads,
                int8_graph="tensorrt",
            ),
            "ort-int8-qdq-uint8": create_head_runner(
                "onnxruntime",
                spec,
                cut,
                int8=True,
                calibration=art.directory,
                threads=args.threads,
            ),
        }
        for batch_size in args.batch or [1, 8]:
            batch = torch.stack([dataset[i][0] for i in range(batch_size)]).numpy()
            variants: Dict[str, Callable[[], object]] = {
                name: (lambda r=r, b=batch: r.run(b)) for name, r in runners.items()
            }
            variants["ort-int8-qdq-uint8-exact"] = lambda s=exact_sess, b=batch: s.run(
                None, {"input": b}
            )
            ref = runners["torch-fp32"].run(batch)
            times = time_variants(variants, args.rounds, args.per_round, args.warmup)
            medians = {name: statistics.median(t) for name, t in times.items()}
            for name, median in medians.items():
                out = variants[name]()
                out = out[0] if isinstance(out, list) else out
                cosine = float(np.sum(out * ref) / (np.linalg.norm(out) * np.linalg.norm(ref)))
                row = {
                    "model": spec.name,
                    "cut": cut,
                    "variant": name,
                    "batch": batch_size,
                    "threads": args.threads,
                    "head_ms": round(median, 3),
                    "head_p90_ms": round(float(np.percentile(times[name], 90)), 3),
                    "images_per_s": round(1000 * batch_size / median, 1),
                    "speedup_vs_torch_fp32": round(medians["torch-fp32"] / median, 2),
                    "speedup_vs_ort_fp32": round(medians["ort-fp32"] / median, 2),
                    "cosine_vs_torch_fp32": round(cosine, 5),
                }
                results.append(row)
                print(
                    f"{cut:>9} b{batch_size:<2} {name:<26} {row['head_ms']:8.3f} ms "
                    f"{row['images_per_s']:8.1f} img/s  x{row['speedup_vs_torch_fp32']:<5} vs "
                    f"torch  x{row['speedup_vs_ort_fp32']:<5} vs ort-fp32  cos {cosine:.4f}"
                )
    payload = {
        "benchmark": "bench_head",
        "machine": cpu_info(),
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
        "results": results,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
