"""Tails on a real Triton Inference Server: the exported repository, results equal to the
torch executor's, Triton's own dynamic batching across edges, and a Triton that goes away and
comes back (``executor_unavailable``, not ready, recovered)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

from edgecloud.cli import main
from edgecloud.cloud.config import BatchingConfig, ModelConfig, ServerConfig
from edgecloud.cloud.metrics import sample_value
from edgecloud.cloud.server import CloudServer
from edgecloud.edge import EdgeClient
from edgecloud.errors import ArtifactError
from edgecloud.transport.client import FeatureClient
from edgecloud.transport.protocol import Request, new_request_id

pytest.importorskip("tritonclient.grpc", reason="needs the triton extra (tritonclient)")


def model_folder(repository: Path) -> Path:
    (folder,) = [p for p in repository.iterdir() if (p / "config.pbtxt").is_file()]
    return folder


def daemon(**config: object) -> CloudServer:
    """An in-process daemon serving Lite0's tail at ``blocks`` (the exported one)."""
    options = {
        "bind": "tcp://127.0.0.1:0",
        "models": [ModelConfig("efficientnet_lite0", ["blocks"])],
        "decode_workers": 0,
        "stats_interval_s": 3600.0,
        **config,
    }
    return CloudServer(ServerConfig(**options))


def triton_daemon(url: str, **config: object) -> CloudServer:
    return daemon(executor="triton", triton_url=url, **config)


@pytest.fixture(scope="module")
def requests(lite0, samples_dir) -> List[Tuple[Request, bytes]]:
    """32 shared images through the edge (head + default codec): (header, bitstream)."""
    paths = sorted((samples_dir / "images").iterdir())[:32]
    edge = EdgeClient("tcp://127.0.0.1:1", spec=lite0, cut="blocks")  # never sends
    try:
        return [edge.prepare(path)[:2] for path in paths]
    finally:
        edge.close()


def send_all(endpoint: str, requests: List[Tuple[Request, bytes]], **policy: object) -> list:
    with FeatureClient(endpoint, window=8, **policy) as client:
        futures = [
            client.submit(dataclasses.replace(request, id=new_request_id()), payload)
            for request, payload in requests
        ]
        return [future.result() for future in futures]


# -- the repository ------------------------------------------------------------------------------


def test_export_writes_a_repository_triton_can_read(triton_repository, lite0, sample_images):
    import onnxruntime as ort
    import torch

    from edgecloud.cloud.triton.repository import parse_config, read_tail
    from edgecloud.partition import split

    folder = model_folder(triton_repository)
    assert folder.name == f"efficientnet_lite0__blocks__{lite0.weights_id[:8]}"
    config = parse_config((folder / "config.pbtxt").read_text())
    assert config.backend == "onnxruntime" and config.max_batch_size == 16
    assert list(config.input[0].dims) == [320, 7, 7] and list(config.output[0].dims) == [1000]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 20000
    manifest = read_tail(folder)
    assert manifest["model"] == "efficientnet_lite0" and manifest["cut"] == "blocks"

    head, tail = split(lite0, "blocks")  # the ONNX tail equals torch's on real features
    with torch.no_grad():
        features = head(sample_images(8))
        expected = tail(features).numpy()
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"))
    got = session.run(["logits"], {"features": features.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-3)
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_a_tampered_or_invalid_repository_is_refused(triton_repository, tmp_path):
    import shutil

    from edgecloud.cloud.triton.repository import parse_config, read_tail

    folder = tmp_path / model_folder(triton_repository).name
    shutil.copytree(model_folder(triton_repository), folder)
    with open(folder / "1" / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match="sha256"):
        read_tail(folder)
    with pytest.raises(ArtifactError, match="model_config schema.*max_batch"):
        parse_config('name: "x"\nmax_batch: 4\n')


def test_export_triton_refuses_bad_options_and_existing_models(triton_repository, capsys):
    argv = ["export-triton", "--cut", "blocks", "--out", str(triton_repository)]
    assert main(argv) == 1
    assert "exists (give --overwrite" in capsys.readouterr().err
    assert main([*argv, "--preferred-batch-sizes", "128", "--overwrite"]) == 1
    assert "preferred batch sizes [128] are not within 1..64" in capsys.readouterr().err
    assert main([*argv, "--instance-kind", "cpu", "--tensorrt", "--overwrite"]) == 1
    assert "TensorRT acceleration needs GPU instances" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--preferred-batch-sizes", "a,b"])
    assert exc.value.code == 2


# -- a real Triton server -----------------------------------------------------------------------


def test_results_through_triton_equal_the_torch_executor(local_triton, requests):
    with daemon() as torch_server, triton_daemon(local_triton.grpc_url) as triton_server:
        assert triton_server.ready() == (True, "")
        expected = send_all(torch_server.endpoint, requests)
        got = send_all(triton_server.endpoint, requests)
    assert all(r.ok for r in expected + got), [r.message for r in got if not r.ok][:1]
    for a, b in zip(expected, got):
        assert a.indices == b.indices
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_triton_batches_requests_of_concurrent_edges(local_triton, requests, http_get):
    """8 edges, a daemon that does not batch (max_batch_size 1) but runs 4 tails at once:
    Triton's dynamic batcher merges their requests (fewer executions than requests)."""
    before = local_triton.metrics()
    server = triton_daemon(
        local_triton.grpc_url,
        workers=4,
        http_bind="127.0.0.1:0",
        batching=BatchingConfig(max_batch_size=1),
    )
    with server:
        replies: List[list] = [[] for _ in range(8)]
        threads = [
            threading.Thread(
                target=lambda i=i: replies[i].extend(
                    send_all(server.endpoint, requests[i % 4 :: 4])
                )
            )
            for i in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        daemon_metrics = http_get(server.http_url + "/metrics")[1].decode()
    after = local_triton.metrics()
    assert all(r.ok for rs in replies for r in rs) and sum(map(len, replies)) == 64
    model = model_folder(local_triton.repository).name
    requests_done = sample_value(after, "nv_inference_request_success", model=model) - sample_value(
        before, "nv_inference_request_success", model=model
    )
    executions = sample_value(after, "nv_inference_exec_count", model=model) - sample_value(
        before, "nv_inference_exec_count", model=model
    )
    # 64 edge requests and the daemon's warm-up batch, in fewer executions
    assert requests_done == 65 and executions < requests_done, (requests_done, executions)
    assert sample_value(daemon_metrics, "edgecloud_request_success_total", cut="blocks") == 64


def test_a_stopped_triton_is_answered_executor_unavailable_and_recovered(
    triton_repository, triton_python, requests, tmp_path, http_get
):
    from edgecloud.cloud.triton.local import LocalTriton

    log = tmp_path / "triton.log"
    triton = LocalTriton(triton_repository, python=triton_python, log_path=log).start()
    server = triton_daemon(triton.grpc_url, http_bind="127.0.0.1:0", triton_timeout_s=3.0)
    try:
        with server:
            assert all(r.ok for r in send_all(server.endpoint, requests[:4]))
            triton.stop()
            down = send_all(server.endpoint, requests[:4], retries=0, timeout_s=10.0)
            assert {r.code for r in down} == {"executor_unavailable"}, [r.message for r in down]
            assert "Triton at" in down[0].message
            status, body = http_get(server.http_url + "/health/ready")
            assert status == 503 and "Triton at" in json.loads(body)["reason"]
            assert http_get(server.http_url + "/health/live")[0] == 200
            metrics = http_get(server.http_url + "/metrics")[1].decode()
            assert (
                sample_value(
                    metrics, "edgecloud_request_failure_total", code="executor_unavailable"
                )
                == 4
            )

            back = LocalTriton(
                triton_repository, python=triton_python, grpc_port=triton.grpc_port, log_path=log
            )
            triton = back.start()
            deadline = time.monotonic() + 30
            while http_get(server.http_url + "/health/ready")[0] != 200:
                assert time.monotonic() < deadline, "the daemon did not become ready again"
                time.sleep(0.2)
            assert all(r.ok for r in send_all(server.endpoint, requests[:8]))
    finally:
        triton.stop()


def test_overwrite_replaces_a_model_whole(triton_repository, tmp_path):
    """The export is written beside the model and renamed: files of the old model do not
    survive, and no partial folder is left for Triton to load."""
    import shutil

    from edgecloud.cloud.triton.repository import read_tail

    folder = tmp_path / model_folder(triton_repository).name
    shutil.copytree(model_folder(triton_repository), folder)
    (folder / "2").mkdir()  # a stale version Triton would also load
    (folder / "2" / "model.onnx").write_bytes(b"stale")
    argv = ["export-triton", "--cut", "blocks", "--out", str(tmp_path), "--overwrite"]
    assert main(argv) == 0
    assert not (folder / "2").exists() and read_tail(folder)["cut"] == "blocks"
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
