"""Fault test: the daemon process is killed and restarted while an edge streams 100 frames."""

from __future__ import annotations

import threading
from collections import Counter

import torch

from edgecloud.cloud.process import DaemonProcess
from edgecloud.codec import FeatureCodec
from edgecloud.partition import split
from edgecloud.transport import FeatureClient, Request

CUT = "blocks"  # 320x7x7 feature, cheap tail: keeps the test fast


def _start_daemon(endpoint: str) -> DaemonProcess:
    daemon = DaemonProcess(
        ["--bind", endpoint, "--cut", CUT, "--max-batch-size", "4", "--max-queue-delay-ms", "2",
         "--threads", "1"]
    )  # fmt: skip
    daemon.start()
    return daemon


def test_client_survives_daemon_kill_and_restart(lite0, sample_images, free_endpoint):
    x = sample_images(4)
    head, _tail = split(lite0, CUT)
    with torch.inference_mode():
        features = head(x).numpy()
        expected = lite0.module(x).argmax(1).numpy()
    codec = FeatureCodec.from_spec("q8-ncc-zstd")
    payloads = [codec.encode(f) for f in features]

    endpoint = free_endpoint
    daemon = _start_daemon(endpoint)
    restarted = []
    try:
        with FeatureClient(endpoint, window=4, timeout_s=1.0, retries=60) as client:
            futures = []
            for i in range(100):
                request = Request(
                    model=lite0.name, weights_id=lite0.weights_id, cut=CUT, codec="q8-ncc-zstd"
                )
                futures.append((i, request.id, client.submit(request, payloads[i % 4])))
                if i == 30:
                    daemon.kill()  # no goodbye: in-flight frames are lost

                    def restart() -> None:
                        restarted.append(_start_daemon(endpoint))

                    threading.Thread(target=restart, daemon=True).start()
            replies = [(i, rid, f.result(120)) for i, rid, f in futures]
            resent = client.stats.resent
    finally:
        for process in [daemon, *restarted]:
            process.stop(60)
    assert restarted, "the daemon was not restarted"
    ids = Counter(rid for _i, rid, _r in replies)
    assert len(ids) == 100 and set(ids.values()) == {1}  # exactly one result per frame
    for i, rid, reply in replies:
        assert reply.id == rid and reply.ok, reply.message
        assert reply.indices[0] == expected[i % 4]
    assert resent > 0  # frames lost with the killed daemon were sent again
