"""Scale-out without a broker: edges list several daemons (ZeroMQ round-robin); one daemon is
killed mid-run and every request is still answered, exactly once, by the other. With a real
Triton server behind both daemons, and with the torch executor (runs everywhere)."""

from __future__ import annotations

import os
import signal
import threading
from typing import List

import pytest

from edgecloud.edge import EdgeClient, EdgeResult
from edgecloud.transport.client import FeatureClient
from edgecloud.transport.protocol import Request

EDGES = 8
FRAMES = 16


def requests_served(endpoint: str) -> int:
    with FeatureClient(endpoint) as client:
        return client.request(Request(kind="stats"), timeout_s=10.0).info["requests"]


@pytest.fixture(params=["torch", "triton"])
def daemon_args(request) -> List[str]:
    args = ["--cut", "blocks", "--decode-workers", "0"]
    if request.param == "triton":
        triton = request.getfixturevalue("local_triton")
        args += ["--executor", "triton", "--triton-url", triton.grpc_url]
    return args


def test_a_killed_daemon_loses_no_request(start_daemon, daemon_args, lite0, samples_dir):
    from edgecloud.backends import create_head_runner

    first, second = start_daemon(*daemon_args), start_daemon(*daemon_args)
    head = create_head_runner("torch", lite0, "blocks")  # shared by the edges' threads
    paths = sorted((samples_dir / "images").iterdir())[:FRAMES]
    answered = threading.Semaphore(0)
    # the first quarter of the frames goes before the first daemon is frozen, the rest after:
    # fast edges could otherwise be done before it is (nothing left to resend)
    frozen = threading.Event()
    results: List[List[EdgeResult]] = [[] for _ in range(EDGES)]
    resent = [0] * EDGES
    endpoints = [first.endpoint, second.endpoint]

    def edge(i: int) -> None:
        with EdgeClient(
            endpoints, spec=lite0, cut="blocks", head=head, window=4, timeout_s=2.0, retries=5
        ) as client:
            client.connect()
            futures = []
            for k, path in enumerate(paths):
                if k == FRAMES // 4:
                    assert frozen.wait(120)
                futures.append(client.submit(path, name=path.name))
                futures[-1].add_done_callback(lambda _f: answered.release())
            results[i] = [future.result() for future in futures]
            resent[i] = client.client.stats.resent

    threads = [threading.Thread(target=edge, args=(i,)) for i in range(EDGES)]
    for thread in threads:
        thread.start()
    for _ in range(EDGES * FRAMES // 4):  # a quarter answered: both daemons have work
        assert answered.acquire(timeout=120)
    assert requests_served(first.endpoint) > 0 and requests_served(second.endpoint) > 0
    # frozen first, so that requests routed to it are surely in flight when it dies (killed
    # at once, it may have answered everything it had); then the edges send the rest
    os.kill(first.pid, signal.SIGSTOP)
    frozen.set()
    for _ in range(EDGES):  # the edges go on with the other daemon meanwhile
        assert answered.acquire(timeout=120)
    first.kill()
    for thread in threads:
        thread.join(120)
    done = [result for edge_results in results for result in edge_results]
    assert len(done) == EDGES * FRAMES
    assert all(r.ok for r in done), {r.code: r.message for r in done if not r.ok}
    assert len({r.request_id for r in done}) == EDGES * FRAMES  # one answer per request
    labels = {r.name: r.labels[0] for r in results[0]}  # the same answer from either daemon
    assert all(r.labels[0] == labels[r.name] for r in done)
    assert sum(resent) > 0  # requests lost with the killed daemon were resent to the other


def test_a_listed_daemon_that_is_down_costs_no_resend(
    start_daemon, free_endpoint, lite0, samples_dir
):
    """Requests go only to daemons the edge is connected to (ZMQ_IMMEDIATE): none waits for a
    timeout in the queue of a daemon that is not there."""
    daemon = start_daemon("--cut", "blocks", "--decode-workers", "0")
    paths = sorted((samples_dir / "images").iterdir())[:8]
    with EdgeClient(
        [free_endpoint, daemon.endpoint], spec=lite0, cut="blocks", timeout_s=30.0
    ) as client:
        assert client.connect()["models"]  # the absent one is logged, not fatal
        results = [future.result() for future in [client.submit(p) for p in paths]]
    assert all(r.ok and r.attempts == 1 for r in results)
