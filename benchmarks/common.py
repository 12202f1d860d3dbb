"""Helpers shared by the benchmark scripts: machine description, process memory, real
features of the shared ImageNet images, JSON results, a daemon and a worker on a shaped link."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: the shared ImageNet images; EDGECLOUD_BENCH_DATA points elsewhere (e.g. a copy carried to a
#: device machine, where ``../shared`` does not travel)
DATA = Path(
    os.environ.get("EDGECLOUD_BENCH_DATA", ROOT / ".." / "shared" / "data" / "imagenet-samples")
)


def machine() -> Dict[str, Any]:
    """CPU model, logical CPUs, VNNI support, Python and the load average (other work on the
    machine skews absolute times; compare within one run)."""
    info: Dict[str, Any] = {"machine": platform.machine(), "python": platform.python_version()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        names = [
            line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line
        ]
        info["cpu"] = names[0] if names else platform.processor()
        info["logical_cpus"] = len(names)
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
        info["avx512_vnni"] = "avx512_vnni" in flags
    except OSError:
        info["cpu"] = platform.processor()
    info["load_average_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
    return info


def cpu_name() -> str:
    return str(machine().get("cpu", ""))


def process_memory_mb(pid: int) -> Tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc/<pid>/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024.0
    return values["VmRSS"], values["VmHWM"]


def real_features(cut: str, images: int = 16) -> Tuple[Any, np.ndarray, np.ndarray]:
    """(model spec, head features (N, C, H, W), full-model top-1) of the first shared images."""
    import torch

    from edgecloud.datasets import ImageFolder
    from edgecloud.models import load_model
    from edgecloud.partition import split

    spec = load_model("efficientnet_lite0")
    ds = ImageFolder(DATA, spec.preprocessing, limit=images)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    head, _tail = split(spec, cut)
    with torch.inference_mode():
        return spec, head(x).numpy(), spec.module(x).argmax(1).numpy()


def percentiles(values: List[float], prefix: str) -> Dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values, dtype=np.float64)
    return {f"{prefix}_p{q}_ms": round(float(np.percentile(arr, q)), 3) for q in (50, 90, 99)}


def write_result(path: str, payload: Dict[str, Any]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")


@contextmanager
def shaped_daemon(rate_mbit: float, serve_args: List[str]) -> Iterator[Tuple[Any, str]]:
    """A network namespace whose loopback is shaped to ``rate_mbit``
    (:class:`~edgecloud.experiments.shaped_link.ShapedLink`) with ``edgecloud serve
    SERVE_ARGS`` in it; yields the link and the daemon's endpoint."""
    from edgecloud.cloud.process import DaemonProcess
    from edgecloud.experiments.shaped_link import ShapedLink

    with ShapedLink(rate_mbit) as link:
        daemon = DaemonProcess(serve_args, prefix=link.command([]))
        try:
            yield link, daemon.start()
        finally:
            daemon.stop(30)


def ask_at_rates(
    link: Any,
    worker_argv: List[str],
    rates: Sequence[float],
    names: Sequence[str],
    show: Callable[[float, str, Any], None],
) -> Dict[str, Dict[str, Any]]:
    """Start a worker in the link's namespace (it prints ``READY``, then answers each
    configuration name written to its stdin with one JSON line); at each rate, set mid-run
    (connections stay up), ask it every name. Returns ``{rate: {name: answer}}``."""
    worker = link.popen(worker_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if worker.stdout.readline().strip() != "READY":
            raise RuntimeError(f"the worker {worker_argv[1:2]} did not start")
        answers: Dict[str, Dict[str, Any]] = {}
        for rate in rates:
            link.set_rate(rate)
            answers[f"{rate:g}"] = {}
            for name in names:
                worker.stdin.write(name + "\n")
                worker.stdin.flush()
                answers[f"{rate:g}"][name] = answer = json.loads(worker.stdout.readline())
                show(rate, name, answer)
        return answers
    finally:
        worker.kill()
        worker.wait()
