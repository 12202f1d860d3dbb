"""Options shared by all commands, so every command spells them the same way."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_DATA = "../shared/data/imagenet-samples"


def add_model_options(parser: argparse.ArgumentParser, *, cut: bool = False) -> None:
    """``--model``, ``--weights`` and (optionally) ``--cut``."""
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"registered model name (default {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="weights file (state_dict); 'random' for random initialisation "
        "(default: the model's packaged pretrained weights, if any)",
    )
    if cut:
        parser.add_argument(
            "--cut", default=None, help="cut point name (see `edgecloud cuts MODEL`)"
        )


def add_data_options(
    parser: argparse.ArgumentParser, *, limit: Optional[int] = None, with_limit: bool = True
) -> None:
    """``--data``, ``--limit`` (unless ``with_limit`` is False), ``--batch-size``, ``--workers``."""
    parser.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help=f"image folder, optionally with labels.csv (file,label,...) (default {DEFAULT_DATA})",
    )
    if with_limit:
        parser.add_argument(
            "--limit", type=int, default=limit, help="use only the first N images (sorted by name)"
        )
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument(
        "--workers", type=int, default=2, help="image decoding worker threads (default 2)"
    )


def add_output_options(parser: argparse.ArgumentParser, *, plot: bool = False) -> None:
    """``--json PATH`` (and optionally ``--plot PATH``)."""
    parser.add_argument(
        "--json", dest="json_path", default=None, help="also write the results as JSON to PATH"
    )
    if plot:
        parser.add_argument("--plot", default=None, help="write a plot (PNG/PDF/SVG) to PATH")


def write_json(path: Optional[str], payload: Any) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")


def format_table(rows: Sequence[Dict[str, Any]], columns: Sequence[str]) -> str:
    """Plain-text table with right-aligned numbers."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
        if isinstance(value, (tuple, list)):
            return "x".join(str(v) for v in value)
        return str(value)

    table: List[List[str]] = [list(columns)] + [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    numeric = [all(isinstance(r.get(c), (int, float)) for r in rows) for c in columns]
    lines = []
    for n, row in enumerate(table):
        parts = [
            row[i].rjust(widths[i]) if numeric[i] else row[i].ljust(widths[i])
            for i in range(len(columns))
        ]
        lines.append("  ".join(parts))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
