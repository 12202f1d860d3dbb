"""`edgecloud demo`, run exactly as the README's first command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from edgecloud.cli.demo import DEMO_PHOTOS

BOOT = "import sys; from edgecloud.cli import main; sys.exit(main(sys.argv[1:]))"


def test_demo_runs_end_to_end_and_stops_its_daemon(tmp_path: Path):
    out = tmp_path / "demo.json"
    proc = subprocess.run(
        [sys.executable, "-c", BOOT, "demo", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    rows = data["results"]
    assert [r["image"] for r in rows] == list(DEMO_PHOTOS)
    assert all(r["same_as_local"] for r in rows)  # split + codec keep the full model's answer
    assert all(0 < r["bytes"] < r["jpeg_bytes"] for r in rows)
    assert rows[0]["prediction"] in proc.stdout and "tail_ms" in proc.stdout
    pid = int(re.search(r"child process (\d+)", proc.stdout).group(1))
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status").read_text()
