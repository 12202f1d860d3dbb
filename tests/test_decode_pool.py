"""The multi-process data plane: decode worker processes, shared-memory slots, worker loss."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import numpy as np
import pytest
import torch
import zmq

from edgecloud.cloud import BatchingConfig, CloudServer, ServerConfig, TailRegistry
from edgecloud.cloud.config import AdmissionConfig, decode_workers
from edgecloud.codec import FeatureCodec, bitstream
from edgecloud.models.record import model_record
from edgecloud.partition import split
from edgecloud.presets import find_preset
from edgecloud.transport import ErrorCode, FeatureClient, Request, make_dealer, pack_request
from edgecloud.transport.protocol import unpack_reply

CUT = "blocks"
N_IMAGES = 32
CODECS = ["q8-ncc-zstd", model_record("efficientnet_lite0").codec_for(CUT)]


@pytest.fixture(scope="module")
def features(lite0, sample_images):
    x = sample_images(N_IMAGES)
    head, _tail = split(lite0, CUT)
    with torch.inference_mode():
        return head(x).numpy()


@pytest.fixture(scope="module")
def registry(lite0):
    registry = TailRegistry("cpu")
    registry.add(lite0, CUT)
    return registry


def _server(registry, workers: int, **config) -> CloudServer:
    config = ServerConfig(
        bind="tcp://127.0.0.1:0",
        decode_workers=workers,
        batching=BatchingConfig(max_batch_size=8, max_queue_delay_ms=2),
        **config,
    )
    server = CloudServer(config, registry=registry)
    server.start()
    return server


def _coder(lite0, codec: str) -> FeatureCodec:
    """The codec as the edge builds it: calibrated ones from the shipped presets."""
    return FeatureCodec.from_spec(codec, find_preset(lite0.name, lite0.weights_id, CUT, codec))


def _infer(lite0, codec: str, **kw) -> Request:
    return Request(model=lite0.name, weights_id=lite0.weights_id, cut=CUT, codec=codec, **kw)


def _serve_all(endpoint: str, lite0, codec: str, payloads):
    with FeatureClient(endpoint, window=16, timeout_s=60) as client:
        futures = [client.submit(_infer(lite0, codec, output="tensor"), p) for p in payloads]
        return [f.result(120) for f in futures]


@pytest.mark.parametrize("codec", CODECS)
def test_decode_workers_give_the_in_process_results(registry, lite0, features, codec):
    coder = _coder(lite0, codec)
    payloads = [coder.encode(f) for f in features]
    results = {}
    for workers in (0, 2):
        server = _server(registry, workers)
        try:
            assert server._describe()["decode_workers"] == workers
            results[workers] = _serve_all(server.endpoint, lite0, codec, payloads)
        finally:
            server.stop()
    for reply in [*results[0], *results[2]]:
        assert reply.ok, reply.message
    for in_process, pooled in zip(results[0], results[2]):
        assert pooled.indices == in_process.indices
        # the same decoded features through the same tail; batches may group differently
        np.testing.assert_allclose(pooled.tensor, in_process.tensor, rtol=1e-4, atol=1e-4)


def test_corrupt_streams_in_a_pooled_batch_are_answered_each(registry, lite0, features):
    codec = FeatureCodec.from_spec("q8-ncc-zstd")
    good = codec.encode(features[0])
    header, _payload = bitstream.unpack(good)
    corrupt = bitstream.pack(header, b"\x01" * 64)  # passes the checks on arrival, fails decode
    server = _server(registry, 1)
    try:
        replies = _serve_all(server.endpoint, lite0, "q8-ncc-zstd", [good, corrupt, good])
    finally:
        server.stop()
    assert replies[0].ok and replies[2].ok
    assert replies[0].indices == replies[2].indices
    assert not replies[1].ok and replies[1].code == ErrorCode.BAD_BITSTREAM, replies[1]


def test_a_killed_decode_worker_is_replaced_and_every_request_answered_once(
    registry, lite0, features
):
    """SIGKILL a decode worker while hundreds of requests are in flight: it is replaced, and
    each request gets exactly one reply (a result, or ``internal_error`` for the batch the
    dead worker held)."""
    codec = CODECS[1]  # the slowest decode: the worker is busy when it is killed
    payloads = [_coder(lite0, codec).encode(f) for f in features]
    n = 600
    server = _server(registry, 1, admission=AdmissionConfig(max_inflight_per_client=n))
    ctx = zmq.Context()
    try:
        before = server._stats()["decode_worker_pids"]
        assert len(before) == 1 and before[0] > 0
        sock = make_dealer(ctx, server.endpoint)
        sent = []
        for i in range(n):
            request = _infer(lite0, codec)
            sent.append(request.id)
            sock.send_multipart(pack_request(request, payloads[i % N_IMAGES]))
        answers = Counter()
        codes = Counter()
        killed = False
        deadline = time.monotonic() + 180
        while sum(answers.values()) < n and time.monotonic() < deadline:
            if not sock.poll(1000):
                continue
            reply = unpack_reply(sock.recv_multipart())
            answers[reply.id] += 1
            codes[reply.code] += 1
            if not killed and sum(answers.values()) >= 40:
                os.kill(before[0], signal.SIGKILL)  # mid-load, a batch in its hands
                killed = True
        assert killed
        assert not sock.poll(1000), "a request was answered twice"
        stats = server._stats()
    finally:
        ctx.destroy(linger=0)
        server.stop()
    assert set(answers) == set(sent) and set(answers.values()) == {1}
    assert set(codes) <= {ErrorCode.OK, ErrorCode.INTERNAL}, codes
    assert codes[ErrorCode.OK] >= n - 2 * 8  # at most the batches the worker held
    assert stats["decode_worker_restarts"] == 1
    assert len(stats["decode_worker_pids"]) == 1 and stats["decode_worker_pids"] != before


def test_decode_workers_default_to_the_cores_less_one():
    workers = decode_workers(ServerConfig())
    assert workers == max(1, (os.cpu_count() or 1) - 1)
    assert decode_workers(ServerConfig(decode_workers=0)) == 0
    assert decode_workers(ServerConfig(decode_workers=3)) == 3


def test_serve_flags_set_the_data_plane_and_precision(samples_dir):
    from edgecloud.cli import build_parser
    from edgecloud.cli.serve import build_config

    args = build_parser().parse_args(
        ["serve", "--decode-workers", "0", "--precision", "fp16", "--data", str(samples_dir),
         "--limit", "8"]
    )  # fmt: skip
    config = build_config(args)
    assert (config.decode_workers, config.precision) == (0, "fp16")
    assert (config.precision_check_data, config.precision_check_images) == (str(samples_dir), 8)
    assert build_config(build_parser().parse_args(["serve"])).decode_workers == -1


def test_fp16_tail_is_checked_against_fp32_on_real_images(registry, lite0, features, samples_dir):
    """fp16 + channels-last (run here on the CPU): top-1 agreement with fp32 on the shared
    images is measured at start-up and reported by ``ping``; results agree with fp32."""
    config = ServerConfig(
        bind="tcp://127.0.0.1:0",
        decode_workers=0,
        precision="fp16",
        precision_check_data=str(samples_dir),
        precision_check_images=16,
    )
    codec = _coder(lite0, "q8-ncc-zstd")
    payloads = [codec.encode(f) for f in features[:8]]
    with CloudServer(config, registry=registry) as server:
        with FeatureClient(server.endpoint, timeout_s=60) as client:
            info = client.ping().info
        replies = _serve_all(server.endpoint, lite0, "q8-ncc-zstd", payloads)
    assert info["precision"] == "fp16"
    check = info["precision_check"]["tails"][f"{lite0.name}/{CUT}"]
    assert check["images"] == 16 and check["top1_agreement"] >= 0.9, check
    assert 0 < check["max_abs_logit_diff"] < 1.0, check  # fp16 differs, but little
    with torch.inference_mode():
        reference = registry.get(lite0.name, CUT).tail(torch.from_numpy(features[:8])).numpy()
    agree = np.mean([r.indices[0] == ref.argmax() for r, ref in zip(replies, reference)])
    assert agree >= 0.85


def test_the_onnxruntime_executor_gives_the_torch_executors_answers(registry, lite0, features):
    """`--executor onnxruntime`: every tail exported to ONNX at start; on the shared images the
    logits equal the torch executor's (same fp32 graph) through the pooled data plane."""
    codec = _coder(lite0, "q8-ncc-zstd")
    payloads = [codec.encode(f) for f in features[:16]]
    results, infos = {}, {}
    for executor in ("torch", "onnxruntime"):
        server = _server(registry, 1, executor=executor, torch_threads=1)
        try:
            with FeatureClient(server.endpoint, timeout_s=60) as client:
                infos[executor] = client.ping().info
            results[executor] = _serve_all(server.endpoint, lite0, "q8-ncc-zstd", payloads)
        finally:
            server.stop()
    assert infos["onnxruntime"]["executor"] == "onnxruntime"
    assert infos["onnxruntime"]["threads"] == 1 and infos["onnxruntime"]["onnxruntime"]
    for by_torch, by_ort in zip(results["torch"], results["onnxruntime"]):
        assert by_ort.ok and by_ort.indices == by_torch.indices
        np.testing.assert_allclose(by_ort.tensor, by_torch.tensor, rtol=1e-3, atol=1e-3)


def test_the_onnxruntime_executor_refuses_what_it_cannot_run():
    from edgecloud.cloud.executors import make_executor
    from edgecloud.errors import BackendUnavailableError, ConfigError

    with pytest.raises(ConfigError, match="onnxruntime executor runs fp32"):
        ServerConfig(executor="onnxruntime", precision="fp16").validate()
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
            make_executor("onnxruntime", torch.device("cuda"))
