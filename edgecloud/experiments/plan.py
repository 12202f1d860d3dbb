"""Deployment planner: where to cut and how to code, for a link's bandwidth.

Inputs are two profiles (``edgecloud profile --json``, one measured on the edge for the heads,
one on the cloud for the tails: ``head_ms``/``tail_ms`` per cut and ``model_ms``) and a sweep
(``edgecloud sweep --json``: bytes, accuracy and codec times per cut × codec). The expected
end-to-end latency of a candidate on a link of ``bandwidth`` Mbit/s is::

    edge_ms + wire_bytes * 8 / bandwidth + rtt_ms + cloud_ms
    wire_bytes = bytes * (1 + PACKET_OVERHEAD) + MESSAGE_OVERHEAD_BYTES

- split at a cut: ``edge_ms = head_ms (edge) + encode_ms``, ``cloud_ms = decode_ms + tail_ms
  (cloud)``;
- cloud-only (the sweep's ``jpeg-input-qNN`` rows, cut ``input``): ``edge_ms = encode_ms`` (JPEG
  of the crop), ``cloud_ms = decode_ms + model_ms (cloud)``;
- edge-only: ``edge_ms = model_ms (edge)``, no network, the uncompressed model's accuracy.

Preprocessing (resize and crop) is the same for every candidate and left out. The objective is
the lowest latency under an accuracy floor, or, given a latency or bytes budget, the best
fidelity (then the lowest drop, then the lowest latency) within it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from edgecloud.errors import EdgecloudError

log = logging.getLogger(__name__)

EDGE_ONLY = "edge-only"
CLOUD_ONLY = "cloud-only"
SPLIT = "split"
#: the cut of the sweep's ``jpeg-input-qNN`` rows (the image is sent)
INPUT_CUT = "input"
#: TCP/IP headers and acknowledgements per payload byte (1500-byte MTU, delayed ACKs)
PACKET_OVERHEAD = 0.08
#: request and reply headers (JSON) of one request, bytes
MESSAGE_OVERHEAD_BYTES = 600
#: the link rates of the planner's table, Mbit/s
DEFAULT_BANDWIDTHS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)


class PlanInputError(EdgecloudError):
    """A profile or sweep file that is missing, unreadable or lacks what the planner needs."""


@dataclass(frozen=True)
class Profile:
    """One machine's latencies for one model (from ``edgecloud profile --json``)."""

    model: str
    model_ms: float
    head_ms: Dict[str, float]
    tail_ms: Dict[str, float]


@dataclass(frozen=True)
class Candidate:
    """One way to deploy: edge-only, cloud-only with an image codec, or a cut with a codec."""

    kind: str
    cut: str
    codec: str
    bytes_per_image: float
    edge_ms: float
    cloud_ms: float
    top1_drop: Optional[float]
    fidelity: Optional[float]

    @property
    def name(self) -> str:
        if self.kind == EDGE_ONLY:
            return EDGE_ONLY
        if self.kind == CLOUD_ONLY:
            return f"{CLOUD_ONLY} {self.codec}"
        return f"{self.cut} {self.codec}"

    def latency_ms(self, bandwidth_mbps: float, rtt_ms: float = 0.0) -> float:
        """Expected end-to-end latency on a link of ``bandwidth_mbps`` (module docstring)."""
        if self.kind == EDGE_ONLY:
            return self.edge_ms
        wire = self.bytes_per_image * (1 + PACKET_OVERHEAD) + MESSAGE_OVERHEAD_BYTES
        return self.edge_ms + wire * 8 / (bandwidth_mbps * 1e3) + rtt_ms + self.cloud_ms

    def as_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "cut": self.cut,
            "codec": self.codec,
            "bytes_per_image": self.bytes_per_image,
            "edge_ms": self.edge_ms,
            "cloud_ms": self.cloud_ms,
            "top1_drop": self.top1_drop,
            "fidelity": self.fidelity,
        }


@dataclass(frozen=True)
class Objective:
    """Accuracy floors (fractions) and budgets; with a budget, accuracy is maximised."""

    min_fidelity: Optional[float] = None
    max_drop: Optional[float] = None
    latency_budget_ms: Optional[float] = None
    max_bytes: Optional[float] = None

    @property
    def maximizes_accuracy(self) -> bool:
        return self.latency_budget_ms is not None or self.max_bytes is not None

    def accepts(self, candidate: Candidate, latency_ms: float) -> bool:
        """Whether ``candidate`` (at ``latency_ms``) meets every floor and budget."""
        if self.min_fidelity is not None and (
            candidate.fidelity is None or candidate.fidelity < self.min_fidelity
        ):
            return False
        if self.max_drop is not None and (
            candidate.top1_drop is None or candidate.top1_drop > self.max_drop
        ):
            return False
        if self.latency_budget_ms is not None and latency_ms > self.latency_budget_ms:
            return False
        return self.max_bytes is None or candidate.bytes_per_image <= self.max_bytes


@dataclass(frozen=True)
class Choice:
    """The planner's answer at one bandwidth (``candidate`` None: nothing meets the objective)."""

    bandwidth_mbps: float
    candidate: Optional[Candidate]
    latency_ms: Optional[float]


def _read_json(path: Union[str, Path], what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise PlanInputError(f"cannot read the {what} {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise PlanInputError(f"the {what} {path} is not JSON: {exc}") from None


def load_profile(path: Union[str, Path]) -> Profile:
    """Read ``edgecloud profile --json`` output; raises :class:`PlanInputError`."""
    data = _read_json(path, "profile")
    try:
        rows = data["cuts"]
        return Profile(
            model=str(data["model"]),
            model_ms=float(data["model_ms"]),
            head_ms={str(r["cut"]): float(r["head_ms"]) for r in rows},
            tail_ms={str(r["cut"]): float(r["tail_ms"]) for r in rows},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanInputError(
            f"the profile {path} lacks {exc} (write it with `edgecloud profile --json`, which "
            "records model_ms and head_ms/tail_ms per cut)"
        ) from None


def load_sweep(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """Rows of ``edgecloud sweep --json`` output; raises :class:`PlanInputError`."""
    data = _read_json(path, "sweep")
    rows = data.get("rows") if isinstance(data, dict) else None
    needed = ("model", "cut", "codec", "bytes_per_image", "encode_ms", "decode_ms")
    if not isinstance(rows, list) or not rows:
        raise PlanInputError(
            f"the sweep {path} has no rows (write it with `edgecloud sweep --json`)"
        )
    for n, row in enumerate(rows):
        missing = [k for k in needed if not isinstance(row, dict) or k not in row]
        if missing:
            raise PlanInputError(f"row {n} of the sweep {path} lacks {', '.join(missing)}")
    return rows


def _accuracy(row: Dict[str, Any], key: str) -> Optional[float]:
    value = row.get(key)
    return None if value is None else float(value)


def build_candidates(
    edge: Profile, cloud: Profile, rows: Sequence[Dict[str, Any]]
) -> List[Candidate]:
    """Edge-only, then one candidate per sweep row of the profiles' model (rows at cuts that
    either profile lacks are skipped with a warning)."""
    if edge.model != cloud.model:
        raise PlanInputError(f"the edge profile is of {edge.model}, the cloud's of {cloud.model}")
    found = [Candidate(EDGE_ONLY, "", "", 0.0, edge.model_ms, 0.0, 0.0, 1.0)]
    skipped = set()
    for row in rows:
        if row["model"] != edge.model:
            continue
        cut, codec = str(row["cut"]), str(row["codec"])
        encode, decode = float(row["encode_ms"]), float(row["decode_ms"])
        if cut == INPUT_CUT:
            kind, edge_ms, cloud_ms = CLOUD_ONLY, encode, decode + cloud.model_ms
        elif cut in edge.head_ms and cut in cloud.tail_ms:
            kind, edge_ms, cloud_ms = SPLIT, edge.head_ms[cut] + encode, decode + cloud.tail_ms[cut]
        else:
            skipped.add(cut)
            continue
        found.append(
            Candidate(
                kind,
                cut,
                codec,
                float(row["bytes_per_image"]),
                edge_ms,
                cloud_ms,
                _accuracy(row, "top1_drop"),
                _accuracy(row, "fidelity"),
            )
        )
    if skipped:
        log.warning("sweep rows at %s skipped: not in both profiles", ", ".join(sorted(skipped)))
    if len(found) == 1:
        raise PlanInputError(f"the sweep has no rows of {edge.model}")
    return found


def choose(
    candidates: Sequence[Candidate],
    bandwidth_mbps: float,
    objective: Objective,
    rtt_ms: float = 0.0,
) -> Choice:
    """The best candidate at ``bandwidth_mbps`` for ``objective``."""
    scored = [(c, c.latency_ms(bandwidth_mbps, rtt_ms)) for c in candidates]
    feasible = [(c, ms) for c, ms in scored if objective.accepts(c, ms)]
    if not feasible:
        return Choice(bandwidth_mbps, None, None)
    if objective.maximizes_accuracy:

        def key(item):
            c, ms = item
            fidelity = -1.0 if c.fidelity is None else c.fidelity
            drop = 1.0 if c.top1_drop is None else c.top1_drop
            return (-fidelity, drop, ms)

        best = min(feasible, key=key)
    else:
        best = min(feasible, key=lambda item: item[1])
    return Choice(bandwidth_mbps, best[0], best[1])


def plan(
    candidates: Sequence[Candidate],
    bandwidths: Sequence[float],
    objective: Objective,
    rtt_ms: float = 0.0,
) -> List[Choice]:
    """:func:`choose` at each bandwidth."""
    return [choose(candidates, bw, objective, rtt_ms) for bw in bandwidths]


def best_of_kind(
    candidates: Sequence[Candidate],
    kind: str,
    bandwidth_mbps: float,
    objective: Objective,
    rtt_ms: float = 0.0,
) -> Choice:
    """The lowest-latency candidate of one kind that meets the objective's floors (the
    reference points edge-only and cloud-only in the planner's table)."""
    floors = Objective(objective.min_fidelity, objective.max_drop)
    return choose([c for c in candidates if c.kind == kind], bandwidth_mbps, floors, rtt_ms)
