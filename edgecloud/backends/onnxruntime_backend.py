"""Head in ONNX Runtime: fp32 export, or the INT8 graphs of a calibration."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from edgecloud.artifacts import sha256_file
from edgecloud.backends.base import HeadRunner, shape_tuple
from edgecloud.errors import CalibrationError
from edgecloud.onnxrt import make_session, providers
from edgecloud.quantize.calibrate import CalibrationArtifacts, artifact_dir
from edgecloud.quantize.export import append_encoder, export_onnx

# Which INT8 graph of a calibration to run: "cpu" (uint8 activations, ONNX Runtime's fast
# integer kernels) or "tensorrt" (the signed QDQ graph exactly as it ships to TensorRT).
INT8_GRAPHS = ("cpu", "tensorrt")


def resolve_calibration(
    spec, cut: str, calibration: Optional[Union[str, Path]]
) -> CalibrationArtifacts:
    """The calibration for ``spec`` at ``cut``: ``calibration`` dir or calibration/<model>/<cut>."""
    directory = Path(calibration) if calibration else artifact_dir(spec.name, cut)
    if not directory.exists():
        raise CalibrationError(
            f"no INT8 calibration at {directory}; run `edgecloud calibrate --model {spec.name} "
            f"--cut {cut}` first (or pass --calibration DIR)"
        )
    artifacts = CalibrationArtifacts.load(directory)
    artifacts.check(spec.name, cut, spec.weights_id)
    return artifacts


class OnnxRuntimeHeadRunner(HeadRunner):
    backend = "onnxruntime"

    def __init__(
        self,
        spec,
        cut: str,
        *,
        int8: bool = False,
        calibration: Optional[Union[str, Path]] = None,
        device: Optional[str] = None,
        threads: Optional[int] = None,
        int8_graph: str = "cpu",
        encoder: Any = None,
    ) -> None:
        import onnxruntime as ort

        providers(ort, device)  # an unknown or unavailable device fails before any export
        self.model, self.cut = spec.name, cut
        self.input_shape = shape_tuple(spec.input_shape)
        self.threads = threads
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        self.device = device or "cpu"
        if int8:
            if int8_graph not in INT8_GRAPHS:
                raise CalibrationError(
                    f"int8_graph must be one of {INT8_GRAPHS}, not {int8_graph!r}"
                )
            artifacts = resolve_calibration(spec, cut, calibration)
            path = artifacts.cpu_onnx if int8_graph == "cpu" else artifacts.qdq_onnx
            self.precision = "int8"
            self.graph = f"qdq-{'uint8' if int8_graph == 'cpu' else 'int8'}"
            self.calibration = str(artifacts.directory)
        else:
            path = self._export_fp32(spec, cut)
            self.precision, self.graph, self.calibration = "fp32", "fp32", None
        if encoder is not None:
            path = append_encoder(path, encoder, self._scratch() / f"{encoder.name}-edge.onnx")
            self.encoder = encoder
        self.onnx_path = path
        self.onnx_sha256 = sha256_file(path)
        self.session = make_session(path, device, threads)
        self.input_name = self.session.get_inputs()[0].name

    def _export_fp32(self, spec, cut: str) -> Path:
        from edgecloud.partition import split

        head, _ = split(spec, cut)
        return export_onnx(head, self.input_shape, self._scratch() / "head_fp32.onnx")

    def _scratch(self) -> Path:
        """A temporary directory for exported graphs, removed on ``close``."""
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="edgecloud-head-")
        return Path(self._tmp.name)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]

    def describe(self) -> Dict[str, Any]:
        return {
            **super().describe(),
            "graph": self.graph,
            "device": self.device,
            "threads": self.threads,
            "calibration": self.calibration,
            "onnx_sha256": self.onnx_sha256,
        }

    def close(self) -> None:
        self.session = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
