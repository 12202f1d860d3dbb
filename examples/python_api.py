"""Split inference from Python: a CloudServer and an EdgeClient in one script.

    .venv/bin/python examples/python_api.py [IMAGE_DIR]

In a deployment the server runs in the cloud (`edgecloud serve`) and only the EdgeClient
part runs on the device; here both run on this machine over a loopback TCP socket.
"""

from __future__ import annotations

import sys

from edgecloud.cloud import BatchingConfig, CloudServer, ServerConfig, TailRegistry
from edgecloud.edge import EdgeClient, iter_frames
from edgecloud.models import load_model

CUT = "blocks.4"
CODEC = "q8-ncc-zstd"


def main() -> None:
    source = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/imagenet-samples"
    spec = load_model("efficientnet_lite0")

    # Cloud side: serve the tail after CUT; port 0 picks a free port.
    registry = TailRegistry("cpu")
    registry.add(spec, CUT)
    config = ServerConfig(
        bind="tcp://127.0.0.1:0",
        batching=BatchingConfig(max_batch_size=8, max_queue_delay_ms=5),
    )
    with CloudServer(config, registry=registry) as server:
        # Edge side: head + codec + DEALER client, up to 4 frames in flight.
        with EdgeClient(server.endpoint, spec=spec, cut=CUT, codec=CODEC, window=4) as edge:
            edge.connect()  # fails fast (TransportError) if nothing answers
            one = edge.predict(next(iter_frames(source))[1])
            print(f"single image: {one.labels[0]} ({one.scores[0]:.2f}), {one.bytes_sent} bytes")
            for result in edge.stream(iter_frames(source, limit=8)):
                t = result.timings
                print(
                    f"{result.name:24s} {result.labels[0]:24s} {result.bytes_sent:6d} B  "
                    f"head {t['head_ms']:.1f} ms  rtt {t['rtt_ms']:.1f} ms  "
                    f"tail {t['tail_ms']:.1f} ms (batch {int(t['batch_size'])})"
                )
        print("server stats:", server.stats.snapshot())


if __name__ == "__main__":
    main()
