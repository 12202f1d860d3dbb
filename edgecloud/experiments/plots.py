"""Rate–accuracy and rate–fidelity plots of sweep rows (log bytes/image, 95 % error bars) and
their Markdown tables (values with their intervals)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np


def codec_family(codec: str) -> str:
    """Spec with bit depth and step (or a video coder's crf/qp) replaced by placeholders: one
    curve per family."""
    if codec.startswith("jpeg-input-q"):
        return "jpeg-input"
    if codec.startswith("learned-"):
        return "learned"
    return re.sub(r"-(s|rd|crf|qp)[\d.]+-", r"-\1X-", re.sub(r"^q\d+", "qB", codec))


def family_label(codecs: Sequence[str]) -> str:
    """The specs of one curve in one label: the parts that vary between them in braces,
    e.g. ``q{2,4,8}-ncc-zstd-msg-pt`` or ``q4-ncc-crans-s{2,2.5,3}-pt``."""
    token_lists = [codec.split("-") for codec in codecs]
    if len({len(tokens) for tokens in token_lists}) != 1:
        return ", ".join(codecs)
    parts = []
    for values in zip(*token_lists):
        unique = list(dict.fromkeys(values))
        if len(unique) == 1:
            parts.append(unique[0])
            continue
        prefix = re.match(r"^[a-z]*", unique[0]).group(0)
        if all(v.startswith(prefix) for v in unique):
            parts.append(prefix + "{" + ",".join(v[len(prefix) :] for v in unique) + "}")
        else:
            parts.append("{" + ",".join(unique) + "}")
    return "-".join(parts)


Interval = Callable[[Mapping[str, object]], Tuple[float, float, float]]


def _value(row: Mapping[str, object], key: str) -> float:
    """``row[key]`` as a float; NaN when missing or empty (a CSV from before the column)."""
    try:
        return float(row.get(key, "nan"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def _top1(row: Mapping[str, object]) -> Tuple[float, float, float]:
    """Top-1 % with the *paired* interval of its drop: ``ref - drop_hi .. ref - drop_lo``."""
    top1, ref = 100.0 * _value(row, "top1"), 100.0 * _value(row, "ref_top1")
    lo, hi = (ref - 100.0 * _value(row, key) for key in ("top1_drop_hi", "top1_drop_lo"))
    return top1, lo, hi


def _fidelity(row: Mapping[str, object]) -> Tuple[float, float, float]:
    fidelity, lo, hi = (100.0 * _value(row, k) for k in ("fidelity", "fidelity_lo", "fidelity_hi"))
    return fidelity, lo, hi


def _rate_curves(ax, rows: Sequence[Mapping[str, object]], value: Interval) -> None:
    """One curve with 95 % error bars per (cut, codec family) of ``value`` (y, lo, hi) against
    bytes/image, plus the JPEG-input baseline."""
    import matplotlib.pyplot as plt

    curves: Dict[Tuple[str, str], List[Tuple[float, float, float, float, str]]] = defaultdict(list)
    for row in rows:
        codec = str(row.get("codec_canonical") or row["codec"])
        key = (str(row["cut"]), codec_family(codec))
        curves[key].append((float(row["bytes_per_image"]), *value(row), codec))
    families = sorted({family for _, family in curves if family != "jpeg-input"})
    cuts = sorted({cut for cut, family in curves if family != "jpeg-input"})
    palette = plt.get_cmap("tab20")
    styles = [("-", "o"), ("--", "^"), (":", "s"), ("-.", "D")]
    for (cut, family), points in sorted(curves.items()):
        points.sort()
        xs, ys, los, his, codecs = zip(*points)
        # no bar where the interval is unknown (rows resumed from an older CSV)
        err = np.nan_to_num([np.subtract(ys, los), np.subtract(his, ys)], nan=0.0).clip(0.0)
        if family == "jpeg-input":
            ax.errorbar(xs, ys, yerr=err, fmt="k--s", markersize=5, linewidth=2, capsize=2,
                        label=f"JPEG of the 224x224 input, {family_label(codecs)}")  # fmt: skip
            continue
        line, marker = styles[cuts.index(cut) % len(styles)]
        color = palette(families.index(family) % 20)
        ax.errorbar(xs, ys, yerr=err, linestyle=line, marker=marker, color=color, markersize=4,
                    capsize=2, elinewidth=0.8, label=f"{cut}: {family_label(codecs)}")  # fmt: skip


def plot_rate_accuracy(rows: Sequence[Mapping[str, object]], path: Union[str, Path]) -> Path:
    """One curve per (cut, codec family) plus the JPEG-input baseline and the reference line;
    error bars: the 95 % paired bootstrap interval of the drop against the reference."""
    fig, ax = _figure()
    _rate_curves(ax, rows, _top1)
    if rows:
        ref = 100.0 * float(rows[0]["ref_top1"])
        ax.axhline(ref, color="grey", linestyle=":", label=f"uncompressed ({ref:.1f} %)")
        ax.axhline(ref - 1.0, color="red", linestyle=":", linewidth=0.8, label="1 point drop")
        model, images = rows[0]["model"], rows[0]["images"]
        ax.set_title(f"{model}: rate vs accuracy on {images} images "
                     "(bars: 95 % paired bootstrap interval of the drop)")  # fmt: skip
    return _save(fig, ax, "bytes per image (bitstream incl. header, log scale)",
                 "top-1 accuracy (%)", path)  # fmt: skip


def plot_rate_fidelity(rows: Sequence[Mapping[str, object]], path: Union[str, Path]) -> Path:
    """Bytes/image against fidelity (top-1 agreement with the uncompressed model), one curve
    per (cut, codec family) as in :func:`plot_rate_accuracy`, 95 % bootstrap error bars."""
    fig, ax = _figure()
    _rate_curves(ax, rows, _fidelity)
    ax.axhline(100.0, color="grey", linestyle=":", label="uncompressed (100 %)")
    if rows:
        model, images = rows[0]["model"], rows[0]["images"]
        ax.set_title(f"{model}: rate vs fidelity on {images} images "
                     "(bars: 95 % bootstrap interval)")  # fmt: skip
    return _save(fig, ax, "bytes per image (bitstream incl. header, log scale)",
                 "fidelity: top-1 agreement with the uncompressed model (%)", path)  # fmt: skip


def fidelity_plot_path(path: Union[str, Path]) -> Path:
    """Where the sweep writes :func:`plot_rate_fidelity` next to ``--plot PATH``:
    ``<PATH stem>-fidelity<suffix>``, e.g. ``out.png`` -> ``out-fidelity.png``."""
    path = Path(path)
    return path.with_name(f"{path.stem}-fidelity{path.suffix}")


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(13, 7))


def _save(fig, ax, xlabel: str, ylabel: str, path: Union[str, Path]) -> Path:
    """Log x axis, labels, grid, legend outside; save at 120 dpi and close."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


MARKDOWN_COLUMNS = (
    ("cut", "cut", "{}"),
    ("codec", "codec", "`{}`"),
    ("bytes_per_image", "bytes/image", "{:.0f}"),
    ("bits_per_element", "bits/element", "{:.3f}"),
    ("top1", "top-1 %", "{:.2f}"),
    ("top1_drop", "drop (points)", "{:+.2f}"),
    ("mcnemar_p", "McNemar p", "{:.2g}"),
    ("fidelity", "fidelity %", "{:.2f}"),
    ("encode_ms", "encode ms", "{:.2f}"),
    ("decode_ms", "decode ms", "{:.2f}"),
)
_PERCENT = {"top1", "top1_drop", "fidelity"}


def markdown_table(rows: Sequence[Mapping[str, object]]) -> str:
    """Sweep rows as a Markdown table, by cut then bytes/image (percentages for accuracies)."""
    order = sorted(rows, key=lambda r: (str(r["cut"]) != "input", str(r["cut"]),
                                        float(r["bytes_per_image"])))  # fmt: skip
    return _markdown(order, MARKDOWN_COLUMNS, _PERCENT)


def _markdown(rows: Sequence[Mapping[str, object]], columns, percent) -> str:
    """``rows`` in order under ``columns`` (key, title, format); ``percent`` keys x 100; a key
    with ``<key>_lo``/``<key>_hi`` in the row shows its interval, ``72.50 [68.90, 76.00]``."""
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            if row.get(key, "") == "":  # a column an older CSV does not have
                cells.append("")
                continue
            scale = 100.0 if key in percent else 1.0
            cell = fmt.format(scale * float(row[key]) if key in percent else row[key])
            lo, hi = _value(row, f"{key}_lo"), _value(row, f"{key}_hi")
            if np.isfinite(lo) and np.isfinite(hi):
                cell += f" [{fmt.format(scale * lo)}, {fmt.format(scale * hi)}]"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


VIDEO_MARKDOWN_COLUMNS = (
    ("cut", "cut", "{}"),
    ("codec", "codec", "`{}`"),
    ("mode", "mode", "{}"),
    ("bytes_per_frame", "bytes/frame", "{:.0f}"),
    ("bits_per_element", "bits/element", "{:.3f}"),
    ("fidelity", "fidelity %", "{:.1f}"),
    ("top5_agreement", "top-5 agreement %", "{:.1f}"),
    ("encode_ms", "encode ms", "{:.2f}"),
    ("decode_ms", "decode ms", "{:.2f}"),
)


def video_markdown_table(rows: Sequence[Mapping[str, object]]) -> str:
    """Video sweep rows as Markdown, by cut, mode, then bytes/frame."""
    order = sorted(rows, key=lambda r: (str(r["cut"]), str(r["mode"]), float(r["bytes_per_frame"])))
    return _markdown(order, VIDEO_MARKDOWN_COLUMNS, {"fidelity", "top5_agreement"})


def plot_video_rate_fidelity(rows: Sequence[Mapping[str, object]], path: Union[str, Path]) -> Path:
    """Bytes/frame against fidelity: one point per row, per-frame hollow, streams filled; error
    bars: the rows' 95 % block bootstrap interval where they carry one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 6))
    palette = plt.get_cmap("tab10")
    codecs = sorted({str(r["codec"]) for r in rows})
    for row in rows:
        color = palette(codecs.index(str(row["codec"])) % 10)
        stream = row["mode"] == "stream"
        x, y = float(row["bytes_per_frame"]), 100.0 * float(row["fidelity"])
        lo, hi = 100.0 * _value(row, "fidelity_lo"), 100.0 * _value(row, "fidelity_hi")
        if np.isfinite(lo) and np.isfinite(hi):  # block bootstrap over frames
            ax.errorbar(x, y, yerr=[[max(y - lo, 0.0)], [max(hi - y, 0.0)]], fmt="none",
                        color=color, capsize=2, elinewidth=0.8)  # fmt: skip
        ax.scatter(x, y, s=50, color=color if stream else "none", edgecolors=color,
                   marker="o" if stream else "s")  # fmt: skip
    for i, codec in enumerate(codecs):
        ax.scatter([], [], color=palette(i % 10), label=codec)
    ax.scatter([], [], color="none", edgecolors="k", marker="s", label="per frame (hollow)")
    ax.scatter([], [], color="k", marker="o", label="stream (filled)")
    if rows:
        ax.set_title(f"{rows[0]['model']} on {rows[0].get('video', 'video')}: "
                     f"{rows[0]['frames']} frames")  # fmt: skip
    return _save(fig, ax, "bytes per frame (log scale)",
                 "fidelity: top-1 agreement with the uncompressed model (%)", path)  # fmt: skip


def plot_plan(candidates, choices, objective, rtt_ms: float, path: Union[str, Path]) -> Path:
    """Expected latency against bandwidth (log-log) of every candidate that meets the
    objective's accuracy floors, the others faint; the planner's choice at each planned
    bandwidth marked."""
    from edgecloud.experiments.plan import CLOUD_ONLY, EDGE_ONLY, Objective

    bandwidths = [c.bandwidth_mbps for c in choices]
    grid = np.geomspace(min(bandwidths) / 2, max(bandwidths) * 2, 200)
    floors = Objective(objective.min_fidelity, objective.max_drop)
    fig, ax = _figure()
    for candidate in candidates:
        latency = [candidate.latency_ms(bw, rtt_ms) for bw in grid]
        eligible = floors.accepts(candidate, 0.0)
        style = {EDGE_ONLY: "--", CLOUD_ONLY: ":"}.get(candidate.kind, "-")
        ax.plot(
            grid,
            latency,
            style,
            linewidth=2.2 if candidate.kind in (EDGE_ONLY, CLOUD_ONLY) else 1.2,
            alpha=1.0 if eligible else 0.15,
            label=candidate.name if eligible else None,
        )
    chosen = [(c.bandwidth_mbps, c.latency_ms, c.candidate) for c in choices if c.candidate]
    ax.scatter(
        [bw for bw, _, _ in chosen],
        [ms for _, ms, _ in chosen],
        s=90,
        facecolors="none",
        edgecolors="black",
        linewidths=2,
        zorder=5,
        label="planner's choice",
    )
    previous = None
    for bw, ms, candidate in chosen:  # name each choice where it starts
        if candidate == previous:
            continue
        previous = candidate
        ax.annotate(candidate.name, (bw, ms), textcoords="offset points", xytext=(4, 8),
                    fontsize=7, rotation=30)  # fmt: skip
    ax.set_yscale("log")
    return _save(fig, ax, "link bandwidth (Mbit/s)", "expected end-to-end latency (ms)", path)
