"""Serve an ``edgecloud export-triton`` repository with a real Triton Inference Server on any
machine, through PyTriton (``nvidia-pytriton`` ships the ``tritonserver`` binary).

A production Triton loads the repository's ONNX files itself (its ONNX Runtime backend); the
PyTriton wheel has only the Python backend, so here each model is an ONNX Runtime session
bound as a Python callable, with the batcher, preferred sizes, queue delay and instance count
read from the model's ``config.pbtxt``. Clients see Triton: its gRPC/HTTP KServe-v2 APIs, its
dynamic batcher, its health endpoints and its Prometheus metrics.

This file runs in its own interpreter and imports nothing from edgecloud (Triton's
Python-backend stub needs the interpreter PyTriton was built for, e.g. a venv of Debian's
``/usr/bin/python3.11``; see :mod:`edgecloud.cloud.triton.local`)::

    python host.py --repository models/ --grpc-port 8001 --http-port 8000 --metrics-port 8002

Needs ``nvidia-pytriton``, ``onnxruntime`` and ``numpy`` in that interpreter.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import onnxruntime as ort
from google.protobuf import text_format
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from tritonclient.grpc import model_config_pb2


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model(folder: Path) -> Any:
    """The model's ``ModelConfig``, after checking the ONNX file against the manifest."""
    config = text_format.Parse(
        (folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    manifest = json.loads((folder / "edgecloud.json").read_text())
    onnx_path = folder / "1" / "model.onnx"
    if _sha256(onnx_path) != manifest["onnx_sha256"]:
        raise SystemExit(f"error: {onnx_path} does not match the sha256 in its manifest")
    return config


def make_infer(onnx_path: Path, config: Any, threads: int) -> Callable:
    """A batched callable running the ONNX file (one ONNX Runtime session per instance)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    input_name, output_name = config.input[0].name, config.output[0].name

    @batch
    def infer(**inputs: np.ndarray) -> Dict[str, np.ndarray]:
        return {output_name: session.run([output_name], {input_name: inputs[input_name]})[0]}

    return infer


def bind_repository(triton: Triton, repository: Path, threads: int) -> List[str]:
    """Bind every model folder of ``repository``; returns their names."""
    names = []
    for folder in sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file()):
        config = load_model(folder)
        batcher = config.dynamic_batching
        instances = sum(group.count for group in config.instance_group) or 1
        triton.bind(
            model_name=config.name,
            infer_func=[
                make_infer(folder / "1" / "model.onnx", config, threads) for _ in range(instances)
            ],
            inputs=[
                Tensor(name=t.name, dtype=np.float32, shape=tuple(t.dims)) for t in config.input
            ],
            outputs=[
                Tensor(name=t.name, dtype=np.float32, shape=tuple(t.dims)) for t in config.output
            ],
            config=ModelConfig(
                max_batch_size=config.max_batch_size,
                batcher=DynamicBatcher(
                    max_queue_delay_microseconds=batcher.max_queue_delay_microseconds,
                    preferred_batch_size=list(batcher.preferred_batch_size) or None,
                ),
            ),
            strict=True,
        )
        names.append(config.name)
    if not names:
        raise SystemExit(f"error: no model folders with a config.pbtxt in {repository}")
    return names


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # SIGTERM leaves through the context manager, which stops tritonserver and its stubs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    config = TritonConfig(
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_verbose=0,
        exit_timeout_secs=5,
    )
    with Triton(config=config) as triton:
        names = bind_repository(triton, args.repository, args.threads)
        print(f"serving {' '.join(names)} grpc={args.grpc_port}", flush=True)
        triton.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
