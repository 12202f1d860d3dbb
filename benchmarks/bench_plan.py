"""The planner against measured latencies on real shaped links.

1. Profiles the heads, tails and the whole model here (torch fp32, batch 1, one thread). The
   cloud is this machine; the edge is this machine slowed down ``--edge-slowdown`` times (each
   head or whole-model run is followed by a sleep of (slowdown - 1) times its duration, and the
   edge profile is the measured one times the slowdown), since edge and cloud share one CPU.
2. Plans with :mod:`edgecloud.experiments.plan` over a fixed set of configurations (edge-only,
   cloud-only = the crop as JPEG q95, and four cut x codec pairs that ``edgecloud serve`` runs
   with its shipped presets), bytes, codec times and accuracy from the sweep.
3. Runs them for real in a network namespace whose loopback is shaped at each rate
   (:class:`edgecloud.experiments.shaped_link.ShapedLink`, the rate changed mid-run): the
   ``edgecloud serve`` daemon and this script's edge worker (``EdgeClient``, one request in
   flight). Cloud-only goes to an image server in the same namespace (a ZeroMQ ROUTER that
   decodes the JPEG and runs the whole model): the daemon does not serve the input. Latency
   per frame: preprocess + head + encode + round trip (or the whole model, for edge-only),
   the first frames of each block dropped as warm-up.
4. Reports per rate the planner's choice, the best fixed configuration's measured p50 and the
   worse of edge-only and cloud-only; targets: the choice within 10 % of the best, and at
   least 2x better than the worse of edge-only and cloud-only. Writes JSON.

    python benchmarks/bench_plan.py --frames 40
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
from common import DATA, RESULTS, ask_at_rates, machine, shaped_daemon, write_result

from edgecloud.experiments import plan as planner

ROOT = Path(__file__).resolve().parents[1]
#: (cut, codec as in the sweep); the cut "input" is cloud-only, None edge-only
CONFIGS = [
    (None, None),
    ("input", "jpeg-input-q95"),
    ("blocks", "q4-ncc-crans-s2.5-pt"),
    ("blocks", "q8-ncc-zstd-msg-pt"),
    ("blocks.3", "q4-ncc-crans-s1.6-pt"),
    ("blocks.3", "q4-ncc-zstd-msg-pt"),
]
CUTS = ["blocks.3", "blocks"]
WARMUP = 3


def config_name(cut: Any, codec: Any) -> str:
    if cut is None:
        return planner.EDGE_ONLY
    return f"{planner.CLOUD_ONLY} {codec}" if cut == "input" else f"{cut} {codec}"


# -- the processes in the namespace --------------------------------------------------------------


def image_server() -> None:
    """Cloud-only: JPEG crop in, whole model, top-1 out (one request at a time)."""
    import torch
    import zmq

    from edgecloud.codec import ImageInputCodec
    from edgecloud.models import load_model

    torch.set_num_threads(1)
    spec = load_model("efficientnet_lite0")
    codec = ImageInputCodec(95)
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print(f"READY tcp://127.0.0.1:{port}", flush=True)
    with torch.inference_mode():
        while True:
            ident, payload = sock.recv_multipart()
            x = spec.preprocessing.normalize(np.asarray(codec.decode(payload)))[None]
            sock.send_multipart([ident, str(int(spec.module(x).argmax())).encode()])


class SlowHead:
    """A head runner followed by a sleep of (slowdown - 1) times its run: a slower edge."""

    def __init__(self, runner: Any, slowdown: float) -> None:
        self.runner, self.slowdown = runner, slowdown

    def run(self, batch: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        out = self.runner.run(batch)
        time.sleep((self.slowdown - 1) * (time.perf_counter() - start))
        return out


class WholeModel:
    """The whole model as a head runner (edge-only)."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.spec.module(torch.from_numpy(batch)).numpy()


def edge_worker(daemon: str, image_server: str, images: str, slowdown: float, frames: int) -> None:
    """Reads a configuration name per line on stdin; answers one JSON line of latencies."""
    import torch
    import zmq

    from edgecloud.backends import create_head_runner
    from edgecloud.codec import ImageInputCodec
    from edgecloud.edge import EdgeClient, iter_frames
    from edgecloud.models import load_model

    torch.set_num_threads(1)
    spec = load_model("efficientnet_lite0")
    pictures = [image for _, image in iter_frames(images, limit=frames)]
    clients = {}
    for cut, codec in CONFIGS:
        if cut not in (None, "input"):
            head = SlowHead(create_head_runner("torch", spec, cut, threads=1), slowdown)
            client = EdgeClient(daemon, spec=spec, cut=cut, codec=codec, head=head, window=1)
            client.connect()
            client.warm_up()
            clients[config_name(cut, codec)] = client
    full = SlowHead(WholeModel(spec), slowdown)
    jpeg = ImageInputCodec(95)
    image_sock = zmq.Context.instance().socket(zmq.DEALER)
    image_sock.connect(image_server)

    def one(name: str, image: Any) -> float:
        start = time.perf_counter()
        if name == planner.EDGE_ONLY:
            full.run(spec.preprocessing(image).numpy()[None])
        elif name.startswith(planner.CLOUD_ONLY):
            image_sock.send(jpeg.encode(spec.preprocessing.crop_image(image)))
            image_sock.recv()
        else:
            clients[name].predict(image)
        return (time.perf_counter() - start) * 1e3

    print("READY", flush=True)
    for line in sys.stdin:
        name = line.strip()
        times = [one(name, pictures[i % len(pictures)]) for i in range(frames + WARMUP)]
        print(json.dumps(times[WARMUP:]), flush=True)


# -- the driver ----------------------------------------------------------------------------------


def profiles(slowdown: float, repeat: int) -> Dict[str, Dict[str, Any]]:
    """The cloud profile measured here and the edge profile (the same times the slowdown), in
    the format of ``edgecloud profile --json``."""
    import torch

    from edgecloud.models import load_model
    from edgecloud.partition import get_cut
    from edgecloud.partition.profile import model_ms, profile_cuts

    torch.set_num_threads(1)
    spec = load_model("efficientnet_lite0")
    rows = [p.as_dict() for p in profile_cuts(spec, [get_cut(spec, c) for c in CUTS], repeat)]
    cloud = {"model": spec.name, "threads": 1, "repeat": repeat,
             "model_ms": model_ms(spec, repeat), "cuts": rows}  # fmt: skip
    edge = dict(cloud, model_ms=cloud["model_ms"] * slowdown, slowdown=slowdown)
    edge["cuts"] = [dict(r, head_ms=r["head_ms"] * slowdown) for r in rows]
    return {"edge": edge, "cloud": cloud}


def measure(args: argparse.Namespace, names: List[str]) -> Dict[str, Dict[str, List[float]]]:
    """Latencies (ms) per rate and configuration on the shaped link."""

    def show(rate: float, name: str, times: List[float]) -> None:
        print(f"{rate:g} Mbit/s  {name:40s} p50 {np.median(times):8.1f} ms", flush=True)

    serve = ["--bind", "tcp://127.0.0.1:0", "--cut", ",".join(CUTS), "--threads", "1",
             "--max-batch-size", "1", "--decode-workers", "0",
             "--stats-interval", "3600"]  # fmt: skip
    with shaped_daemon(args.rates[0], serve) as (link, endpoint):
        server = link.popen([sys.executable, __file__, "--image-server"], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
        try:
            image_endpoint = server.stdout.readline().split()[1]
            worker = [sys.executable, __file__, "--edge-worker", endpoint, "--image-endpoint",
                      image_endpoint, "--edge-slowdown", str(args.edge_slowdown), "--frames",
                      str(args.frames)]  # fmt: skip
            measured = ask_at_rates(link, worker, args.rates, names, show)
        finally:
            server.kill()
            server.wait()
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="timed frames per config and rate")
    parser.add_argument("--rates", default="0.5,2,10,100", help="Mbit/s, comma-separated")
    parser.add_argument("--edge-slowdown", type=float, default=4.0)
    parser.add_argument("--max-drop", type=float, default=1.0, help="accuracy floor, points")
    parser.add_argument("--sweep", default=str(ROOT / "docs" / "results-sweep.json"))
    parser.add_argument("--repeat", type=int, default=15, help="profile runs per measurement")
    parser.add_argument("--json", default=str(RESULTS / "plan.json"))
    parser.add_argument("--image-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--edge-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--image-endpoint", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.image_server:
        return image_server()
    if args.edge_worker:
        return edge_worker(
            args.edge_worker, args.image_endpoint, str(DATA / "images"), args.edge_slowdown,
            args.frames,
        )  # fmt: skip
    args.rates = [float(r) for r in args.rates.split(",")]

    measured_profiles = profiles(args.edge_slowdown, args.repeat)
    for side, profile in measured_profiles.items():  # as `edgecloud plan --profile` reads them
        write_result(str(RESULTS / f"plan-{side}-profile.json"), profile)
    edge = planner.load_profile(RESULTS / "plan-edge-profile.json")
    cloud = planner.load_profile(RESULTS / "plan-cloud-profile.json")
    wanted = {(cut, codec) for cut, codec in CONFIGS if cut is not None}
    rows = [r for r in planner.load_sweep(args.sweep) if (r["cut"], r["codec"]) in wanted]
    candidates = planner.build_candidates(edge, cloud, rows)
    objective = planner.Objective(max_drop=args.max_drop / 100)
    choices = planner.plan(candidates, args.rates, objective)
    names = [c.name for c in candidates]
    measured = measure(args, names)

    report = []
    for choice in choices:
        rate = f"{choice.bandwidth_mbps:g}"
        p50 = {n: float(np.median(v)) for n, v in measured[rate].items()}
        eligible = {c.name: p50[c.name] for c in candidates if objective.accepts(c, 0.0)}
        best = min(eligible, key=eligible.get)
        chosen = choice.candidate.name
        extremes = [n for n in eligible if n == planner.EDGE_ONLY or n.startswith("cloud-only")]
        worst_extreme = max(extremes, key=eligible.get)
        report.append({
            "rate_mbps": choice.bandwidth_mbps, "choice": chosen,
            "choice_predicted_ms": choice.latency_ms, "choice_p50_ms": p50[chosen],
            "best_fixed": best, "best_fixed_p50_ms": p50[best],
            "worst_of_edge_cloud_only": worst_extreme,
            "worst_of_edge_cloud_only_p50_ms": p50[worst_extreme],
            "within_10pct_of_best": p50[chosen] <= 1.10 * p50[best],
            "speedup_vs_worst_of_edge_cloud_only": p50[worst_extreme] / p50[chosen],
            "at_least_2x_better": p50[worst_extreme] >= 2 * p50[chosen],
            "p50_ms": p50,
            "p90_ms": {n: float(np.percentile(v, 90)) for n, v in measured[rate].items()},
            "predicted_ms": {c.name: c.latency_ms(choice.bandwidth_mbps) for c in candidates},
        })  # fmt: skip
        r = report[-1]
        print(f"{rate:>5} Mbit/s: chosen {chosen} {r['choice_p50_ms']:.1f} ms "
              f"(predicted {choice.latency_ms:.1f}); best {best} {r['best_fixed_p50_ms']:.1f}; "
              f"worst of edge/cloud-only {worst_extreme} {r['worst_of_edge_cloud_only_p50_ms']:.1f}"
              f" -> within 10 %: {r['within_10pct_of_best']}, "
              f"{r['speedup_vs_worst_of_edge_cloud_only']:.2f}x")  # fmt: skip
    write_result(args.json, {
        "benchmark": "bench_plan", "machine": machine(), "frames": args.frames,
        "warmup_frames": WARMUP, "edge_slowdown": args.edge_slowdown,
        "max_drop_points": args.max_drop, "sweep": str(Path(args.sweep).relative_to(ROOT)),
        "profiles": measured_profiles,
        "candidates": [c.as_dict() for c in candidates], "rates": report,
        "latencies_ms": measured,
    })  # fmt: skip


if __name__ == "__main__":
    main()
