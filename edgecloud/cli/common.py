"""Output helpers shared by the commands: JSON files and plain-text tables in human units."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union


def write_json(path: Optional[str], payload: Any) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")


def _number(fmt: str) -> Callable[[Any], str]:
    def format_value(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return fmt.format(value)

    return format_value


#: how a column is shown: the unit goes into the title, the cell is a fixed format
FORMATS: Dict[str, Callable[[Any], str]] = {
    "text": lambda v: "x".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v),
    "int": _number("{:,}"),
    "pct": lambda v: _number("{:.2f}")(None if v is None else 100.0 * v),  # fraction -> %
    "points": lambda v: _number("{:+.2f}")(None if v is None else 100.0 * v),  # fraction -> points
    "kb": lambda v: _number("{:.2f}")(None if v is None else v / 1024.0),  # bytes -> KB
    "ms": _number("{:.2f}"),
    "bits": _number("{:.3f}"),
    "score": _number("{:.3f}"),
    "ratio": _number("{:.2f}"),
    "float": _number("{:.4g}"),
}


@dataclass(frozen=True)
class Column:
    """A table column: row key, title (with its unit) and format (a key of FORMATS)."""

    key: str
    title: str = ""
    format: str = "text"


def format_table(rows: Sequence[Dict[str, Any]], columns: Sequence[Union[str, Column]]) -> str:
    """Plain-text table; numbers right-aligned, each column in one fixed format."""
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    cells: List[List[str]] = [[c.title or c.key for c in cols]]
    for row in rows:
        cells.append([FORMATS[c.format](row.get(c.key)) for c in cols])
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    lines = []
    for n, line in enumerate(cells):
        parts = [
            line[i].ljust(widths[i]) if cols[i].format == "text" else line[i].rjust(widths[i])
            for i in range(len(cols))
        ]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
