"""``edgecloud serve`` in a child process, for the demo, benchmarks and fault tests."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import List, Optional, Sequence

from edgecloud.errors import EdgecloudError

_BOOT = "import sys; from edgecloud.cli import main; sys.exit(main(sys.argv[1:]))"


def cli_command(*args: str) -> List[str]:
    """``edgecloud ARGS`` as a command line for this interpreter (no console script needed)."""
    return [sys.executable, "-c", _BOOT, *args]


class DaemonProcess:
    """Runs ``edgecloud serve SERVE_ARGS``; :meth:`start` waits for its ``READY <endpoint>``.
    ``new_session``: in a process group of its own (signals to the group reach its workers);
    ``prefix`` runs it through another command, e.g. into a shaped link's network namespace
    (:meth:`edgecloud.experiments.shaped_link.ShapedLink.command`)."""

    def __init__(
        self,
        serve_args: Sequence[str],
        verbose: bool = False,
        new_session: bool = False,
        prefix: Sequence[str] = (),
    ) -> None:
        command = [*prefix, *cli_command("serve", *serve_args)]
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=None if verbose else subprocess.DEVNULL,
            text=True,
            start_new_session=new_session,
        )
        self.endpoint: Optional[str] = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> str:
        """The endpoint the daemon announces once it listens."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("READY "):
                self.endpoint = line.split()[1]
                return self.endpoint
        raise EdgecloudError(f"the daemon did not start (exit code {self.proc.poll()})")

    def kill(self, timeout: float = 30.0) -> None:
        """SIGKILL: no graceful shutdown, in-flight work is lost."""
        self.proc.kill()
        self.proc.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful shutdown); SIGKILL if it does not exit within ``timeout``."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
