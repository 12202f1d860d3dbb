"""An adaptive edge on a real shaped link whose rate steps down mid-run (tests, benchmark).

Daemon and ``edgecloud edge --adapt`` run inside a :class:`ShapedLink`'s network namespace;
the edge sends the shared images at a camera's pace and writes one JSON record per frame.
When ``step_after`` frames have been answered the link's rate changes. The records are then
split into the phase before the step and after it, and for each phase this reports the
latency percentiles, bytes per frame, the codecs used and the **fidelity** (top-1 agreement
with the uncompressed model on the same images), plus how long after the step the latency
was back under the target for good (the median of every later 5 frames), and whether any
frame was lost.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from edgecloud.cloud.process import DaemonProcess, cli_command
from edgecloud.experiments.shaped_link import ShapedLink

LATENCY_STAGES = ("preprocess_ms", "head_ms", "encode_ms", "rtt_ms")
#: "back under the target": the median latency of every later run of this many frames is
#: (one frame over it, e.g. the head stalled by another process, is not the link)
RECOVERY_FRAMES = 5


@dataclass
class StepRun:
    """One run: ``frames`` images at ``fps``, the link at ``before_mbit`` until ``step_after``
    frames are answered, then ``after_mbit``; ``adapt_ms`` the edge's target (None: a fixed
    ``codec``)."""

    data: str
    frames: int = 200
    fps: float = 10.0
    before_mbit: float = 10.0
    after_mbit: float = 1.0
    step_after: int = 60
    adapt_ms: Optional[float] = 150.0
    codec: Optional[str] = None
    cut: str = "blocks"
    window: int = 4


def reference_top1(spec: Any, data: str, limit: int) -> Dict[str, int]:
    """Frame name -> the uncompressed model's top-1 index, on the frames the edge reads."""
    import torch

    from edgecloud.edge import iter_frames

    out: Dict[str, int] = {}
    with torch.inference_mode():
        for name, image in iter_frames(data, limit):
            logits = spec.module(spec.preprocessing(image)[None])
            out[name] = int(logits.argmax(1)[0])
    return out


def run_step(run: StepRun, out_dir: Path, reference: Dict[str, int]) -> Dict[str, Any]:
    """Run it; ``reference``: image name -> the uncompressed model's top-1 index."""
    out_dir.mkdir(parents=True, exist_ok=True)
    records = out_dir / "frames.jsonl"
    with ShapedLink(run.before_mbit) as link:
        serve = ["--bind", "tcp://127.0.0.1:0", "--cut", run.cut, "--decode-workers", "0",
                 "--stats-interval", "3600"]  # fmt: skip
        daemon = DaemonProcess(serve, prefix=link.command([]))
        endpoint = daemon.start()
        edge = cli_command("edge", "--connect", endpoint, "--data", run.data,
                           "--limit", str(run.frames), "--fps", str(run.fps), "--cut", run.cut,
                           "--window", str(run.window), "--jsonl", str(records), "-q")  # fmt: skip
        if run.adapt_ms is not None:
            edge += ["--adapt", str(run.adapt_ms)]
        if run.codec:
            edge += ["--codec", run.codec]
        try:
            process = link.popen(edge, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            stepped_at = _step_when_answered(link, process, records, run)
            _out, err = process.communicate(timeout=run.frames / run.fps + 120)
        finally:
            daemon.stop(30)
    frames = [json.loads(line) for line in records.read_text().splitlines()]
    result = summarize(frames, stepped_at, run, reference)
    result["edge_exit_code"] = process.returncode
    if process.returncode != 0:
        result["edge_stderr"] = err.decode(errors="replace")[-2000:]
    return result


def _step_when_answered(
    link: ShapedLink, process: subprocess.Popen, records: Path, run: StepRun
) -> int:
    """Change the rate once ``step_after`` records exist; returns how many there were."""
    while process.poll() is None:
        done = _count_lines(records)
        if done >= run.step_after:
            link.set_rate(run.after_mbit)
            return done
        time.sleep(0.02)
    return _count_lines(records)


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def latency_ms(frame: Dict[str, Any]) -> float:
    return sum(frame.get(stage, 0.0) for stage in LATENCY_STAGES)


def summarize(
    frames: List[Dict[str, Any]], stepped_at: int, run: StepRun, reference: Dict[str, int]
) -> Dict[str, Any]:
    """Per phase: latency, bytes, codecs, fidelity; recovery time after the step."""
    # frames answered before the step were sent before it; the next ``window`` straddle it
    phases = {"before": frames[:stepped_at], "after": frames[stepped_at:]}
    out: Dict[str, Any] = {
        "frames": len(frames),
        "lost": run.frames - len(frames) + sum(f["status"] != "ok" for f in frames),
        "step_after_frames": stepped_at,
        "before_mbit": run.before_mbit,
        "after_mbit": run.after_mbit,
        "fps": run.fps,
        "adapt_ms": run.adapt_ms,
        "codec": run.codec,
    }
    for name, phase in phases.items():
        ok = [f for f in phase if f["status"] == "ok"]
        latencies = [latency_ms(f) for f in ok]
        codecs: Dict[str, int] = {}
        for f in ok:
            codecs[f["codec"]] = codecs.get(f["codec"], 0) + 1
        agree = [f["top1_index"] == reference[f["name"]] for f in ok if f["name"] in reference]
        out[name] = {
            "frames": len(phase),
            "latency_p50_ms": _pct(latencies, 50),
            "latency_p90_ms": _pct(latencies, 90),
            "bytes_per_frame": round(statistics.mean(f["bytes"] for f in ok), 1) if ok else None,
            "codecs": codecs,
            "fidelity": round(sum(agree) / len(agree), 4) if agree else None,
            "latencies_ms": [round(value, 1) for value in latencies],  # in frame order
            "head_ms": [round(f["head_ms"], 1) for f in ok],
        }
    target = run.adapt_ms
    if target is not None:
        after = [latency_ms(f) for f in phases["after"]]
        rolling = [statistics.median(after[i : i + RECOVERY_FRAMES]) for i in range(len(after))]
        over = [i for i, value in enumerate(rolling) if value > target]
        recovered = over[-1] + 1 if over else 0  # from here on every window is under it
        out["recovered_after_frames"] = recovered if recovered < len(after) else None
        out["recovered_after_s"] = round(recovered / run.fps, 2) if recovered < len(after) else None
    return out


def _pct(values: Sequence[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 1)
