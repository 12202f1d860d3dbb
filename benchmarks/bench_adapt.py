"""Adaptive streaming after a link step (10 -> 1 Mbit/s) on a real shaped link.

Daemon and edge run inside an unprivileged network namespace whose loopback is shaped with
``tc tbf`` (edgecloud.experiments.shaped_link); the edge sends the shared images at 10 frames/s.
Two runs in one invocation: ``edge --adapt 150`` (ladder q8-ncc-zstd, q4-ncc-zstd,
q4-ncc-crans-s2.5-pt) and the fixed 8-bit codec it starts with. Reports per phase the latency
p50/p90, bytes per frame, codecs and fidelity (top-1 agreement with the uncompressed model),
the time until the adaptive edge was back under its target for good, and lost frames. Writes
JSON.

    python benchmarks/bench_adapt.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import DATA, RESULTS, machine, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--target-ms", type=float, default=150.0)
    parser.add_argument("--before-mbit", type=float, default=10.0)
    parser.add_argument("--after-mbit", type=float, default=1.0)
    parser.add_argument("--step-after", type=int, default=60, help="frames answered before it")
    parser.add_argument("--json", default=str(RESULTS / "adapt.json"))
    args = parser.parse_args()

    from edgecloud.experiments.adapt_run import StepRun, reference_top1, run_step
    from edgecloud.experiments.shaped_link import unavailable_reason
    from edgecloud.models import load_model

    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"no shaped link on this machine: {reason}")
    data = str(DATA.resolve())
    reference = reference_top1(load_model("efficientnet_lite0"), data, args.frames)
    common = dict(data=data, frames=args.frames, fps=args.fps, before_mbit=args.before_mbit,
                  after_mbit=args.after_mbit, step_after=args.step_after)  # fmt: skip
    runs = {
        "adaptive": StepRun(**common, adapt_ms=args.target_ms),
        "fixed_q8-ncc-zstd": StepRun(**common, adapt_ms=None, codec="q8-ncc-zstd"),
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in runs.items():
            results[name] = run_step(run, Path(tmp) / name, reference)
            print(name, json.dumps(results[name]), flush=True)
    adaptive = results["adaptive"]
    results["target_met"] = (
        adaptive["lost"] == 0
        and adaptive["recovered_after_s"] is not None
        and adaptive["recovered_after_s"] <= 2.0
    )
    write_result(args.json, {"machine": machine(), "settings": vars(args), **results})


if __name__ == "__main__":
    main()
