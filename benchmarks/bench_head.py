"""Edge speed as users run it: the head through ``create_head_runner`` and the whole edge path.

For each cut: torch fp32, ONNX Runtime fp32, ONNX Runtime INT8 (the CPU graph the
onnxruntime backend runs by default) and the TensorRT QDQ graph run by ONNX Runtime, all made
by ``edgecloud.backends.create_head_runner`` exactly as ``edgecloud edge``/``eval`` make them,
timed in interleaved rounds (fair under background load), medians and ratios from the same run.
Then the whole edge path per frame -- preprocess (PIL image -> tensor) + INT8 head + encode
with the cut's recommended codec -- against the torch fp32 head alone, and the codec's encode
and decode times.

With ``--learned NAME.npz`` (a codec from ``edgecloud train-codec``): at that codec's cut, the
edge path of a learned codec two ways, fp32 and INT8 head -- the head graph then the codec's
encoder in torch (``FeatureCodec.encode``), against head and encoder as one ONNX Runtime graph
(``create_head_runner(encoder=...)`` + ``encode_latents``, what ``edgecloud edge`` runs).

    python benchmarks/bench_head.py                    # -> benchmarks/results/head.json
    python benchmarks/bench_head.py --cut blocks --batch 1 --batch 8
    python benchmarks/bench_head.py --learned codecs/.../NAME.npz --json head_learned.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import numpy as np
from common import DATA, RESULTS, ROOT, machine, write_result

CUTS = ["blocks.3", "blocks.4", "blocks"]


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


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cut", action="append", help=f"cut (repeatable; default {CUTS})")
    parser.add_argument("--batch", type=int, action="append", help="batch sizes (default 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--learned", help="a learned codec file: time its edge path only")
    parser.add_argument("--json", default=str(RESULTS / "head.json"))
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from edgecloud.backends import create_head_runner
    from edgecloud.codec import FeatureCodec
    from edgecloud.datasets import ImageFolder
    from edgecloud.edge.client import preset_for
    from edgecloud.models import load_model
    from edgecloud.quantize import CalibrationArtifacts, artifact_dir, calibrate

    torch.set_num_threads(args.threads)
    spec = load_model("efficientnet_lite0")
    dataset = ImageFolder(DATA, spec.preprocessing)

    def int8_calibration(cut: str) -> CalibrationArtifacts:
        root = ROOT / "calibration"  # where `edgecloud calibrate` run in the repo writes
        try:
            art = CalibrationArtifacts.load(artifact_dir(spec.name, cut, root))
            art.check(spec.name, cut, spec.weights_id)
            return art
        except Exception:  # missing or stale: calibrate on the last images, as the CLI does
            import torch.utils.data as tud

            n = len(dataset)
            subset = tud.Subset(dataset, range(n - args.calib_images, n))
            return calibrate(spec, cut, subset, root=root, num_images=args.calib_images)

    versions = {"torch": torch.__version__, "onnxruntime": ort.__version__}
    if args.learned:
        from edgecloud.codec import load_calibration_file

        learned = load_calibration_file(args.learned)
        cut = learned.meta["cut"]
        rows = learned_path(spec, learned, dataset, int8_calibration(cut), args)
        write_result(
            args.json,
            {"benchmark": "bench_head --learned", "machine": machine(), "versions": versions,
             "codec": learned.spec, "cut": cut, "config": learned.config.__dict__,
             "results": rows},
        )  # fmt: skip
        return 0
    results, edge_rows = [], []
    for cut in args.cut or CUTS:
        art = int8_calibration(cut)
        make = {
            "torch-fp32": dict(backend="torch"),
            "ort-fp32": dict(backend="onnxruntime"),
            "ort-int8": dict(backend="onnxruntime", int8=True, calibration=art.directory),
            "ort-int8-tensorrt-graph": dict(
                backend="onnxruntime", int8=True, calibration=art.directory, int8_graph="tensorrt"
            ),
        }
        runners = {
            name: create_head_runner(kw.pop("backend"), spec, cut, threads=args.threads, **kw)
            for name, kw in make.items()
        }
        for batch_size in args.batch or [1]:
            batch = np.stack([dataset[i][0].numpy() for i in range(batch_size)])
            variants = {name: (lambda r=r, b=batch: r.run(b)) for name, r in runners.items()}
            ref = runners["torch-fp32"].run(batch)
            times = time_variants(variants, args.rounds, args.per_round, args.warmup)
            medians = {name: statistics.median(t) for name, t in times.items()}
            for name, median in medians.items():
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
                    "cosine_vs_torch_fp32": round(cosine(variants[name](), ref), 5),
                }
                results.append(row)
                print(
                    f"{cut:>9} b{batch_size:<2} {name:<24} {row['head_ms']:8.3f} ms  "
                    f"x{row['speedup_vs_torch_fp32']:<5} vs torch  x{row['speedup_vs_ort_fp32']:<5}"
                    f" vs ort-fp32  cos {row['cosine_vs_torch_fp32']:.4f}"
                )
        edge_rows.append(edge_path(spec, cut, dataset, runners, preset_for, FeatureCodec, args))
        for runner in runners.values():
            runner.close()
    payload = {
        "benchmark": "bench_head",
        "machine": machine(),
        "versions": versions,
        "onnxruntime_options": "2 threads, sequential, spinning off (the backend's)",
        "results": results,
        "edge_path": edge_rows,
    }
    write_result(args.json, payload)
    return 0


def edge_path(spec, cut, dataset, runners, preset_for, FeatureCodec, args) -> Dict[str, object]:
    """Per frame: preprocess + INT8 head + encode, against the torch fp32 head alone."""
    codec_name = spec.record.codec_for(cut)
    codec = FeatureCodec.from_spec(codec_name, preset_for(spec, cut, codec_name))
    images = [dataset.load_image(i) for i in range(8)]
    state = {"i": 0}

    def frame() -> None:
        image = images[state["i"] % len(images)]
        state["i"] += 1
        x = spec.preprocessing(image).numpy()[None]
        codec.encode(runners["ort-int8"].run(x)[0])

    feature = runners["ort-int8"].run(spec.preprocessing(images[0]).numpy()[None])[0]
    stream = codec.encode(feature)
    torch_input = spec.preprocessing(images[0]).numpy()[None]
    variants = {
        "edge_path": frame,
        "torch_fp32_head": lambda: runners["torch-fp32"].run(torch_input),
        "preprocess": lambda: spec.preprocessing(images[0]),
        "encode": lambda: codec.encode(feature),
        "decode": lambda: codec.decode(stream),
    }
    times = time_variants(variants, args.rounds, args.per_round, args.warmup)
    med = {name: round(statistics.median(t), 3) for name, t in times.items()}
    row = {
        "cut": cut,
        "codec": codec_name,
        "bytes": len(stream),
        **{f"{name}_ms": value for name, value in med.items()},
        "edge_path_vs_torch_fp32_head": round(med["torch_fp32_head"] / med["edge_path"], 2),
    }
    print(
        f"{cut:>9} edge path (preprocess + INT8 head + {codec_name}) {med['edge_path']:.2f} ms "
        f"against the torch fp32 head alone {med['torch_fp32_head']:.2f} ms: "
        f"x{row['edge_path_vs_torch_fp32_head']}; encode {med['encode']:.3f} ms, decode "
        f"{med['decode']:.3f} ms, {len(stream)} B"
    )
    return row


def learned_path(spec, learned, dataset, art, args) -> List[Dict[str, object]]:
    """Per frame, fp32 and INT8 head: head graph + torch encoder + ``encode`` against head and
    encoder as one graph + ``encode_latents``; the same bitstream size either way."""
    from edgecloud.backends import create_head_runner
    from edgecloud.codec import FeatureCodec

    codec = FeatureCodec.from_spec(learned.spec, learned)
    cut = learned.meta["cut"]
    x = np.stack([dataset[i][0].numpy() for i in range(1)])
    rows = []
    for precision, kw in (("fp32", {}), ("int8", dict(int8=True, calibration=art.directory))):
        head = create_head_runner("onnxruntime", spec, cut, threads=args.threads, **kw)
        joint = create_head_runner(
            "onnxruntime", spec, cut, threads=args.threads, encoder=learned, **kw
        )
        latents = joint.run(x)[0]
        variants = {
            "head_then_torch_encoder": lambda h=head: codec.encode(h.run(x)[0]),
            "one_graph": lambda j=joint: codec.encode_latents(j.run(x)[0]),
            "head_alone": lambda h=head: h.run(x),
            "entropy_coding": lambda lat=latents: codec.encode_latents(lat),
        }
        times = time_variants(variants, args.rounds, args.per_round, args.warmup)
        med = {name: round(statistics.median(t), 3) for name, t in times.items()}
        row = {
            "cut": cut,
            "precision": precision,
            "threads": args.threads,
            **{f"{name}_ms": value for name, value in med.items()},
            "one_graph_speedup": round(med["head_then_torch_encoder"] / med["one_graph"], 2),
            "bytes_head_then_torch_encoder": len(variants["head_then_torch_encoder"]()),
            "bytes_one_graph": len(variants["one_graph"]()),
        }
        rows.append(row)
        print(
            f"{cut} {precision}: head + torch encoder + encode {med['head_then_torch_encoder']:.2f}"
            f" ms, one graph + encode_latents {med['one_graph']:.2f} ms "
            f"(x{row['one_graph_speedup']}); head alone {med['head_alone']:.2f} ms, entropy "
            f"coding {med['entropy_coding']:.3f} ms"
        )
        head.close()
        joint.close()
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
