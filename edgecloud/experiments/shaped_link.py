"""A real constrained link for tests and benchmarks: an unprivileged network namespace
(``unshare -rn``) whose loopback goes through a token-bucket filter (``tc qdisc ... tbf``).

Processes started with :meth:`ShapedLink.popen` or :meth:`ShapedLink.run` join the namespace
(``nsenter``), so a daemon and an edge talking over ``tcp://127.0.0.1`` there share one link of
``rate_mbit`` Mbit/s in both directions; :meth:`ShapedLink.set_rate` changes it mid-run. The
loopback's MTU is set to 1500 and the bucket holds one packet (more above 25 Mbit/s), so a
message is paced at the rate from its second packet on, as on a real link (``netem`` is not
available: no added delay or loss).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any, List, Optional, Sequence

MTU = 1500
#: bytes the bucket holds at least: one full packet on the loopback (MTU + Ethernet header)
BURST_BYTES = 1600
#: and at high rates what the rate sends in this long (timer granularity would slow it)
BURST_MS = 0.5
#: how long a packet may wait in the queue before it is dropped
QUEUE_LATENCY_MS = 2000


def unavailable_reason() -> Optional[str]:
    """Why a shaped link cannot be made on this machine (None if it can)."""
    for tool in ("unshare", "nsenter", "ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = subprocess.run(
        ["unshare", "-rn", "sh", "-c", _setup_script(1.0)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return (
            "an unprivileged network namespace with tc is not permitted: "
            + (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
        )
    return None


def _tbf(verb: str, rate_mbit: float) -> str:
    burst = max(BURST_BYTES, int(rate_mbit * 1e6 / 8 * BURST_MS / 1e3))
    return (
        f"tc qdisc {verb} dev lo root tbf rate {rate_mbit * 1000:.0f}kbit "
        f"burst {burst} latency {QUEUE_LATENCY_MS}ms"
    )


def _setup_script(rate_mbit: float) -> str:
    return f"ip link set lo up && ip link set lo mtu {MTU} && {_tbf('add', rate_mbit)}"


class ShapedLink:
    """A network namespace whose loopback is limited to ``rate_mbit`` Mbit/s (a context
    manager; raises ``RuntimeError`` with :func:`unavailable_reason`'s text if it cannot)."""

    def __init__(self, rate_mbit: float) -> None:
        self.rate_mbit = rate_mbit
        self._holder = subprocess.Popen(["unshare", "-rn", "sleep", "infinity"])
        try:
            self._wait_for_namespace()
            self.run(["sh", "-c", _setup_script(rate_mbit)], check=True, capture_output=True)
        except BaseException:
            self.close()
            raise

    def _wait_for_namespace(self) -> None:
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._holder.poll() is not None:
                raise RuntimeError(
                    f"unshare -rn exited with status {self._holder.returncode}: "
                    f"{unavailable_reason()}"
                )
            try:
                if os.readlink(f"/proc/{self._holder.pid}/ns/net") != own:
                    return
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("the network namespace did not appear within 10 s")

    def command(self, argv: Sequence[str]) -> List[str]:
        """``argv`` prefixed to run inside the namespace."""
        return ["nsenter", "-t", str(self._holder.pid), "-U", "-n", "--preserve-credentials"] + [
            str(a) for a in argv
        ]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` inside the namespace (``subprocess.Popen`` keyword arguments)."""
        return subprocess.Popen(self.command(argv), **kwargs)

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the namespace (``subprocess.run`` keyword arguments)."""
        return subprocess.run(self.command(argv), **kwargs)

    def set_rate(self, rate_mbit: float) -> None:
        """Change the link's rate now (``tc qdisc change``); running processes keep going."""
        self.run(["sh", "-c", _tbf("change", rate_mbit)], check=True, capture_output=True)
        self.rate_mbit = rate_mbit

    def close(self) -> None:
        """End the namespace (processes still in it keep it alive until they exit)."""
        if self._holder.poll() is None:
            self._holder.kill()
        self._holder.wait()

    def __enter__(self) -> ShapedLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
