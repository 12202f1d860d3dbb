"""How much would choosing the step per image save? An oracle bound, and resending the images
the cloud is unsure of.

Every evaluation image's feature is coded once at each step of a ladder of codecs
(``--template``, default ``q4-ncc-crans-s{}-pt``; ``q8-ct-av1-crf{}`` with crf values as
steps is AV1's ladder; calibrated codecs on the LAST ``--calib-images`` shared images, the first
``--images`` evaluated, as in ``edgecloud sweep``), decoded and run through the tail.

- **Oracle**: per image the coarsest step whose answer equals the uncompressed model's (the
  finest if none does). Bytes no per-image choice of step can beat; it needs the answer it
  is choosing for, so it is a bound, not a codec.
- **Resend when unsure** (a policy an edge can run with what the daemon replies today): send
  at a coarse step; when the reply's top-1 softmax score exceeds the second by less than
  ``tau``, send the same feature again at a fine step and take that answer. Bytes are both
  messages, measured; the fraction resent is the share of images that pay a second round trip;
  ``coarse_answers_changed`` counts the answers taken from the coarse stream that differ from
  the uncompressed model's.
- **Resend when unstable within the cells** (``--cell-samples K``, a test the daemon could run):
  the coarse feature plus ``K`` draws of uniform noise of ``spread`` quantization steps per
  element (where the true feature may lie) through the tail; the score is the smallest margin
  of the coarse answer over the draws (negative when a draw changes it). ``ranking`` compares
  it with the softmax margin at equal shares resent: which test picks the better frames.

Fidelity is top-1 agreement with the uncompressed model (95 % bootstrap interval over images).
Writes JSON.

    python benchmarks/refine_gain.py --plot docs/results/refine-blocks.png
    # -> benchmarks/results/refine_gain.json
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from common import DATA, RESULTS, machine, write_result

from edgecloud.codec import CodecCalibration, FeatureCodec, parse_spec, quantizer
from edgecloud.datasets import ImageFolder
from edgecloud.experiments.stats import bootstrap_ci
from edgecloud.models import load_model
from edgecloud.partition import split


def floats(text: str) -> List[float]:
    return [float(v) for v in text.split(",")]


def margin_of(logits: np.ndarray, answer: np.ndarray) -> np.ndarray:
    """Softmax score of ``answer`` less the best other score, per row."""
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    rows = np.arange(len(probs))
    chosen = probs[rows, answer].copy()
    probs[rows, answer] = -1.0
    return chosen - probs.max(1)


def cell_steps(codec: FeatureCodec, channels: int) -> np.ndarray:
    """The quantization step of each channel, shaped to broadcast over (N, C, H, W)."""
    cal = codec.calibration
    step = quantizer.step_size(cal.lo, cal.hi, codec.spec.bits)
    return np.broadcast_to(step, (channels,)).reshape(1, channels, 1, 1)


def noise(rng: np.random.Generator, x: np.ndarray, step: np.ndarray, spread: float) -> np.ndarray:
    return rng.uniform(-0.5, 0.5, x.shape).astype(np.float32) * step * np.float32(spread)


def plot(rows: List[Dict[str, Any]], cut: str, template: str, path: str) -> None:
    """Fidelity against bits/element (95 % intervals): the fixed steps, each coarse -> fine
    pair over its margins, the oracle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: Dict[str, List[Dict[str, Any]]] = {}
    for row in rows:
        name = row["policy"]
        if name == "resend when unsure":
            name = f"resend when unsure: {row['coarse']} -> {row['fine']} (margins)"
        series.setdefault(name, []).append(row)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name, points in series.items():
        points = sorted(points, key=lambda r: r["bits_per_element"])
        x = [r["bits_per_element"] for r in points]
        y = np.array([100 * r["fidelity"] for r in points])
        err = [
            y - [100 * r["fidelity_lo"] for r in points],
            [100 * r["fidelity_hi"] for r in points] - y,
        ]
        style = (
            {"marker": "*", "markersize": 12, "linestyle": ""}
            if name == "oracle"
            else {"marker": "o"}
        )
        ax.errorbar(x, y, yerr=err, capsize=2, label=name, **style)
    ax.axhline(96, color="grey", linewidth=0.8, linestyle=":")
    ax.axvline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("bits per element (both messages of a resent frame)")
    ax.set_ylabel("fidelity % (top-1 = uncompressed model's)")
    ax.set_title(f"EfficientNet-Lite0 at {cut}: {template.format('X')}, per image or resent")
    ax.set_xlim(0, 1.5)
    ax.set_ylim(85, 100.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cut", default="blocks")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument(
        "--first", type=int, default=0, help="first evaluated image (0; 400: held-out images)"
    )
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument(
        "--template", default="q4-ncc-crans-s{}-pt", help="codec spec with {} for the step"
    )
    parser.add_argument("--steps", type=floats, default=[1.6, 2, 2.5, 3, 3.5, 4, 5, 6, 8])
    parser.add_argument("--coarse", type=floats, default=[3.5, 4])
    parser.add_argument("--fine", type=floats, default=[2.5, 2, 1.6])
    parser.add_argument("--tau", type=floats, default=[0.01, 0.02, 0.05, 0.1])
    parser.add_argument("--cell-samples", type=int, default=0, help="K draws per image (0: off)")
    parser.add_argument("--cell-spread", type=floats, default=[0.5, 1.0])
    parser.add_argument("--json", default=str(RESULTS / "refine_gain.json"))
    parser.add_argument("--plot", default="", help="rate-fidelity plot (PNG/PDF/SVG) to PATH")
    args = parser.parse_args()
    missing = sorted(set(args.coarse + args.fine) - set(args.steps))
    if missing:
        parser.error(f"--coarse/--fine steps {missing} are not in --steps")

    if "{}" not in args.template:
        parser.error("--template needs {} where the step goes")
    step_token = next(t for t in args.template.split("-") if "{}" in t)

    def label(step: float) -> str:
        """The spec token that names a step: s3.5, crf59."""
        return step_token.format(f"{step:g}")

    spec = load_model("efficientnet_lite0")
    head, tail = split(spec, args.cut)
    dataset = ImageFolder(DATA, spec.preprocessing)
    n = len(dataset)

    def run(module, x: np.ndarray, batch: int = 50) -> np.ndarray:
        with torch.inference_mode():
            return np.concatenate(
                [
                    module(torch.from_numpy(x[i : i + batch])).numpy()
                    for i in range(0, len(x), batch)
                ]
            )

    def features(indices: List[int]) -> np.ndarray:
        return run(head, np.stack([dataset[i][0].numpy() for i in indices]))

    calib = features(list(range(n - args.calib_images, n)))
    if args.first + args.images > n - args.calib_images:
        parser.error(f"--first + --images overlap the {args.calib_images} calibration images")
    evaluate = features(list(range(args.first, args.first + args.images)))
    elements = int(np.prod(evaluate.shape[1:]))
    reference = run(tail, evaluate).argmax(1)

    nbytes: Dict[float, np.ndarray] = {}
    kept: Dict[float, np.ndarray] = {}
    margin: Dict[float, np.ndarray] = {}
    cell: Dict[Tuple[float, float], np.ndarray] = {}  # (step, spread) -> score per image
    rng = np.random.default_rng(0)
    rows: List[Dict[str, Any]] = []

    def summary(name: str, sent: np.ndarray, hits: np.ndarray, **extra: Any) -> Dict[str, Any]:
        lo, hi = bootstrap_ci(hits)
        row = {
            "policy": name,
            **extra,
            "bytes_per_image": round(float(sent.mean()), 1),
            "bits_per_element": round(float(sent.mean()) * 8 / elements, 4),
            "fidelity": round(float(hits.mean()), 4),
            "fidelity_lo": round(lo, 4),
            "fidelity_hi": round(hi, 4),
        }
        print(row, flush=True)
        rows.append(row)
        return row

    for step in args.steps:
        codec_spec = args.template.format(f"{step:g}")
        calibration = (
            CodecCalibration.fit(calib, codec_spec)
            if parse_spec(codec_spec).needs_calibration
            else None
        )
        codec = FeatureCodec.from_spec(codec_spec, calibration)
        streams = [codec.encode(f) for f in evaluate]
        logits = run(tail, np.stack([codec.decode(s) for s in streams]))
        answer = logits.argmax(1)
        nbytes[step] = np.array([len(s) for s in streams], dtype=np.float64)
        kept[step] = answer == reference
        margin[step] = margin_of(logits, answer)
        if args.cell_samples and step in args.coarse:
            if codec.calibration is None:
                parser.error("--cell-samples needs a calibrated quantizer (a -sX- template)")
            decoded = np.stack([codec.decode(s) for s in streams])
            cell_step = cell_steps(codec, decoded.shape[1])
            for spread in args.cell_spread:
                draws = [
                    margin_of(run(tail, decoded + noise(rng, decoded, cell_step, spread)), answer)
                    for _ in range(args.cell_samples)
                ]
                cell[step, spread] = np.min(draws, axis=0)
        summary("fixed step", nbytes[step], kept[step], codec=codec_spec)

    ladder = sorted(args.steps)
    choice = [
        max((s for s in ladder if kept[s][i]), default=ladder[0]) for i in range(len(evaluate))
    ]
    summary(
        "oracle",
        np.array([nbytes[s][i] for i, s in enumerate(choice)]),
        np.array([kept[s][i] for i, s in enumerate(choice)]),
        steps_chosen={f"{s:g}": choice.count(s) for s in ladder},
    )
    for coarse in args.coarse:
        for fine in args.fine:
            for tau in args.tau:
                resend = margin[coarse] < tau
                summary(
                    "resend when unsure",
                    nbytes[coarse] + resend * nbytes[fine],
                    np.where(resend, kept[fine], kept[coarse]),
                    coarse=label(coarse),
                    fine=label(fine),
                    tau=tau,
                    resent=round(float(resend.mean()), 4),
                    coarse_answers=int((~resend).sum()),
                    coarse_answers_changed=int((~resend & ~kept[coarse]).sum()),
                )
    ranking = []
    for (coarse, spread), score in cell.items():
        for fine in args.fine:
            for share in (0.1, 0.2, 0.3, 0.4):
                count = int(round(share * len(score)))
                entry = {"coarse": label(coarse), "fine": label(fine), "resent": share}
                for name, test in (("margin", margin[coarse]), (f"cell_{spread:g}", score)):
                    resend = np.zeros(len(test), dtype=bool)
                    resend[np.argsort(test, kind="stable")[:count]] = True
                    hits = np.where(resend, kept[fine], kept[coarse])
                    entry[f"fidelity_{name}"] = round(float(hits.mean()), 4)
                print(entry, flush=True)
                ranking.append(entry)
    if args.plot:
        plot(rows, args.cut, args.template, args.plot)
    write_result(
        args.json,
        {
            "benchmark": "refine_gain",
            "machine": machine(),
            "cut": args.cut,
            "template": args.template,
            "shape": list(evaluate.shape[1:]),
            "images": [args.first, args.first + args.images],
            "calib_images": args.calib_images,
            "results": rows,
            **({"cell_samples": args.cell_samples, "ranking": ranking} if ranking else {}),
        },
    )


if __name__ == "__main__":
    main()
