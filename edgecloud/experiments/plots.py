"""Rate–accuracy plots of sweep rows (log bytes/image vs top-1)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple, Union


def codec_family(codec: str) -> str:
    """Spec with bit depth and step replaced by placeholders: one curve per family."""
    if codec.startswith("jpeg-input-q"):
        return "jpeg-input"
    return re.sub(r"-s[\d.]+-", "-sX-", re.sub(r"^q\d+", "qB", codec))


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


def plot_rate_accuracy(rows: Sequence[Mapping[str, object]], path: Union[str, Path]) -> Path:
    """One curve per (cut, codec family) plus the JPEG-input baseline and the reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: Dict[Tuple[str, str], List[Tuple[float, float, str]]] = defaultdict(list)
    for row in rows:
        codec = str(row.get("codec_canonical") or row["codec"])
        key = (str(row["cut"]), codec_family(codec))
        curves[key].append((float(row["bytes_per_image"]), 100.0 * float(row["top1"]), codec))
    fig, ax = plt.subplots(figsize=(13, 7))
    families = sorted({family for _, family in curves if family != "jpeg-input"})
    cuts = sorted({cut for cut, family in curves if family != "jpeg-input"})
    palette = plt.get_cmap("tab20")
    styles = [("-", "o"), ("--", "^"), (":", "s"), ("-.", "D")]
    for (cut, family), points in sorted(curves.items()):
        points.sort()
        xs, ys, codecs = zip(*points)
        if family == "jpeg-input":
            label = f"JPEG of the 224x224 input, {family_label(codecs)}"
            ax.plot(xs, ys, "k--s", label=label, markersize=5, linewidth=2)
            continue
        line, marker = styles[cuts.index(cut) % len(styles)]
        color = palette(families.index(family) % 20)
        ax.plot(xs, ys, linestyle=line, marker=marker, color=color, markersize=4,
                label=f"{cut}: {family_label(codecs)}")  # fmt: skip
    if rows:
        ref = 100.0 * float(rows[0]["ref_top1"])
        ax.axhline(ref, color="grey", linestyle=":", label=f"uncompressed ({ref:.1f} %)")
        ax.axhline(ref - 1.0, color="red", linestyle=":", linewidth=0.8, label="1 point drop")
        model, images = rows[0]["model"], rows[0]["images"]
        ax.set_title(f"{model}: rate vs accuracy on {images} images")
    return _save(fig, ax, "bytes per image (bitstream incl. header, log scale)",
                 "top-1 accuracy (%)", path)  # fmt: skip


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
    """``rows`` in order under ``columns`` (key, title, format); ``percent`` keys x 100."""
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row[key]
            if key in percent:
                value = 100.0 * float(value)
            cells.append(fmt.format(value))
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
    """Bytes/frame against fidelity: one point per row, per-frame hollow, streams filled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 6))
    palette = plt.get_cmap("tab10")
    codecs = sorted({str(r["codec"]) for r in rows})
    for row in rows:
        color = palette(codecs.index(str(row["codec"])) % 10)
        stream = row["mode"] == "stream"
        ax.scatter(float(row["bytes_per_frame"]), 100.0 * float(row["fidelity"]), s=50,
                   color=color if stream else "none", edgecolors=color,
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
