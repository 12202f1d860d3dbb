"""The Python API in one page: model, cut, codec, daemon and edge client on loopback.

python examples/quickstart.py [IMAGE_DIR]
"""

from __future__ import annotations

import sys

from edgecloud import FeatureCodec, cut_points, load_model, split
from edgecloud.backends import create_head_runner
from edgecloud.cloud import BatchingConfig, CloudServer, ServerConfig, TailRegistry
from edgecloud.edge import EdgeClient, iter_frames

images = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/imagenet-samples"

spec = load_model("efficientnet_lite0")  # module + preprocessing + labels + weights_id
print([c.name for c in cut_points(spec)][:5])  # CutPoint(name, index, shape)
head, tail = split(spec, "blocks")  # tail(head(x)) == spec.module(x)

first_name, first_image = next(iter_frames(images))
feature = head(spec.preprocessing(first_image)[None])  # frames are PIL images
codec = FeatureCodec.from_spec("q8-ncc-zstd")  # calibrated specs: from_spec(spec, calibration)
data = codec.encode(feature)
restored = codec.decode(data)  # BitstreamError on any damaged stream
print(f"{first_name}: {feature.numel()} floats -> {len(data)} bytes")

registry = TailRegistry("cpu")
registry.add(spec, "blocks")
config = ServerConfig(bind="tcp://127.0.0.1:0", batching=BatchingConfig(max_batch_size=8))
with CloudServer(config, registry=registry) as server:
    runner = create_head_runner("torch", spec, "blocks")  # or "onnxruntime" / "tensorrt", int8=True
    with EdgeClient(
        server.endpoint, spec=spec, cut="blocks", codec="q8-ncc-zstd", head=runner
    ) as edge:
        for result in edge.stream(iter_frames(images, limit=4)):  # pipelined, in order
            print(result.name, result.labels[0], result.bytes_sent, result.timings["rtt_ms"])
