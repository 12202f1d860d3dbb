"""Head as a TensorRT engine, run with the name-based tensor API, PyCUDA buffers and a stream.

PyCUDA contexts do not follow threads: the device's primary context (the one TensorRT's CUDA
runtime uses) is pushed around every CUDA call, so a runner built in one thread can run in
another (one call at a time).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

import numpy as np

from edgecloud.artifacts import sha256_file
from edgecloud.backends.base import HeadRunner, shape_tuple
from edgecloud.backends.onnxruntime_backend import resolve_calibration
from edgecloud.backends.tensorrt_engine import (
    DEFAULT_ENGINE_DIR,
    EngineBuildError,
    engine_key,
    import_pycuda,
    import_tensorrt,
    load_or_build,
    make_logger,
)
from edgecloud.errors import BackendUnavailableError
from edgecloud.quantize.export import INPUT_NAME, append_encoder, export_onnx


def parse_device(device: Optional[str]) -> tuple:
    """``None``/``cuda``/``cuda:N`` -> (N, None); ``dla:K`` -> (0, K)."""
    if device in (None, "cuda", "gpu"):
        return 0, None
    kind, _, index = device.partition(":")
    if kind in ("cuda", "gpu") and index.isdigit():
        return int(index), None
    if kind == "dla" and (index.isdigit() or not index):
        return 0, int(index or 0)
    raise BackendUnavailableError(
        f"tensorrt backend: device {device!r} is not cuda[:N] or dla:K (TensorRT needs a GPU)"
    )


class TensorRTHeadRunner(HeadRunner):
    backend = "tensorrt"

    def __init__(
        self,
        spec,
        cut: str,
        *,
        int8: bool = False,
        calibration: Optional[Union[str, Path]] = None,
        device: Optional[str] = None,
        fp16: bool = False,
        implicit_int8: bool = False,
        dla_core: Optional[int] = None,
        max_batch: int = 8,
        opt_batch: int = 1,
        engine_dir: Union[str, Path] = DEFAULT_ENGINE_DIR,
        workspace_mb: int = 1024,
        rebuild: bool = False,
        encoder: Any = None,
    ) -> None:
        trt = import_tensorrt()
        cuda = import_pycuda()
        self._cuda = cuda
        self.model, self.cut = spec.name, cut
        self.input_shape = shape_tuple(spec.input_shape)
        gpu_index, device_dla = parse_device(device)
        self.dla_core = dla_core if dla_core is not None else device_dla
        if not 1 <= opt_batch <= max_batch:
            raise BackendUnavailableError(f"need 1 <= opt_batch ({opt_batch}) <= max_batch")
        # The DLA has no dynamic shapes: one static batch size, smaller batches are padded.
        profile = (
            (opt_batch, opt_batch, opt_batch)
            if self.dla_core is not None
            else (1, opt_batch, max_batch)
        )
        self.max_batch = profile[2]
        engine_dir = Path(engine_dir)

        cache = None
        if encoder is not None and implicit_int8:
            raise BackendUnavailableError(
                "a learned encoder needs the explicit (QDQ) INT8 graph: drop implicit_int8 (its "
                "calibration cache has no scales for the encoder)"
            )
        if int8:
            artifacts = resolve_calibration(spec, cut, calibration)
            self.calibration = str(artifacts.directory)
            if implicit_int8:
                onnx_path, cache, self.precision = (
                    artifacts.fp32_onnx,
                    artifacts.trt_cache,
                    "int8-implicit",
                )
            else:
                onnx_path, self.precision = artifacts.qdq_onnx, "int8"
        else:
            self.calibration = None
            onnx_path = self._fp32_onnx(spec, cut, engine_dir)
            self.precision = "fp16" if fp16 else "fp32"
        if encoder is not None:
            onnx_path = self._with_encoder(
                onnx_path, encoder, engine_dir / "onnx" / spec.name / cut
            )
            self.encoder = encoder
        self.onnx_path = onnx_path

        self._device = cuda.Device(gpu_index)
        self._ctx = self._device.retain_primary_context()
        with self._current():
            self.key = engine_key(
                onnx_path,
                precision=self.precision,
                fp16=fp16,
                profile=profile,
                dla_core=self.dla_core,
                calibration_cache=cache,
                device_index=gpu_index,
            )
            serialized, self.engine_path, self.built = load_or_build(
                onnx_path,
                self.key,
                engine_dir / spec.name / cut,
                rebuild=rebuild,
                input_name=INPUT_NAME,
                input_shape=self.input_shape,
                calibration_cache=cache,
                workspace_mb=workspace_mb,
            )
            self._logger = make_logger(trt)
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(serialized)
            if self._engine is None:
                raise EngineBuildError(
                    f"TensorRT cannot load {self.engine_path} (delete it to rebuild): "
                    + " | ".join(self._logger.messages[-5:])
                )
            self._context = self._engine.create_execution_context()
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [
                n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT
            ]
            if len(inputs) != 1 or len(outputs) != 1:
                raise EngineBuildError(f"head engine must have 1 input and 1 output: {names}")
            self.input_name, self.output_name = inputs[0], outputs[0]
            in_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self.input_name)))
            out_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self.output_name)))
            self._context.set_input_shape(self.input_name, (self.max_batch, *self.input_shape))
            out_shape = tuple(self._context.get_tensor_shape(self.output_name))
            self.output_shape = out_shape[1:]
            self._stream = cuda.Stream()
            self._host_in = cuda.pagelocked_empty((self.max_batch, *self.input_shape), in_dtype)
            self._host_out = cuda.pagelocked_empty(out_shape, out_dtype)
            self._dev_in = cuda.mem_alloc(self._host_in.nbytes)
            self._dev_out = cuda.mem_alloc(self._host_out.nbytes)
            self._context.set_tensor_address(self.input_name, int(self._dev_in))
            self._context.set_tensor_address(self.output_name, int(self._dev_out))
            self.gpu = self.key.gpu

    @contextlib.contextmanager
    def _current(self) -> Iterator[None]:
        """Make this runner's CUDA context current in the calling thread."""
        self._ctx.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def _fp32_onnx(self, spec, cut: str, engine_dir: Path) -> Path:
        """The fp32 head ONNX, exported once per weights under ``engine_dir/onnx``."""
        from edgecloud.partition import split

        path = engine_dir / "onnx" / spec.name / cut / f"{spec.weights_id}.onnx"
        if not path.is_file():
            head, _ = split(spec, cut)
            export_onnx(head, self.input_shape, path)
        return path

    @staticmethod
    def _with_encoder(onnx_path: Path, encoder: Any, directory: Path) -> Path:
        """Head graph + learned encoder, made once per (head graph, codec) under ``directory``
        (the engine cache keys on the graph's sha256)."""
        key = f"{sha256_file(onnx_path)[:12]}-{encoder.hash[:12]}"
        path = directory / f"{onnx_path.stem}+{encoder.name}-{key}.onnx"
        if not path.is_file():
            append_encoder(onnx_path, encoder, path)
        return path

    def _run(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        rows = self.max_batch if self.dla_core is not None else n  # static DLA batch: pad
        self._host_in[:n] = batch
        if rows > n:
            self._host_in[n:rows] = 0
        with self._current():
            self._context.set_input_shape(self.input_name, (rows, *self.input_shape))
            in_bytes = self._host_in[:rows]
            out_view = self._host_out[:rows]
            self._cuda.memcpy_htod_async(self._dev_in, in_bytes, self._stream)
            if not self._context.execute_async_v3(self._stream.handle):
                raise EngineBuildError("TensorRT execute_async_v3 failed")
            self._cuda.memcpy_dtoh_async(out_view, self._dev_out, self._stream)
            self._stream.synchronize()
        return np.array(out_view[:n], dtype=np.float32)

    def describe(self) -> Dict[str, Any]:
        return {
            **super().describe(),
            "device": f"dla:{self.dla_core}" if self.dla_core is not None else "cuda",
            "gpu": self.key.gpu,
            "compute_capability": self.key.compute_capability,
            "tensorrt": self.key.tensorrt,
            "profile": list(self.key.profile),
            "engine": str(self.engine_path),
            "engine_built": self.built,
            "calibration": self.calibration,
        }

    def close(self) -> None:
        if getattr(self, "_dev_in", None) is None:
            return
        with self._current():
            self._dev_in.free()
            self._dev_out.free()
            self._dev_in = self._dev_out = None
            self._context = self._engine = None
        self._ctx.detach()
