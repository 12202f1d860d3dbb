"""Post-training INT8 calibration of a head: fp32 ONNX -> TensorRT-style QDQ ONNX + artifacts.

Artifacts land in ``<root>/<model>/<cut>/`` (see :class:`CalibrationArtifacts`):

- ``head_fp32.onnx``  the exported fp32 head (also the input for TensorRT implicit INT8);
- ``head_qdq.onnx``   the explicitly quantized graph to ship to TensorRT: signed symmetric
  INT8, zero point 0, per-channel weight scales on axis 0, per-tensor activation scales,
  fp32 bias, float weights with Q/DQ pairs and one consumer per Q/DQ pair (what the
  TensorRT 8.5 ONNX parser accepts), Q/DQ at the inputs of Conv/Add (after the activations);
- ``head_qdq_cpu.onnx`` the same calibration as a fast ONNX Runtime graph
  (:mod:`edgecloud.quantize.cpu_graph`);
- ``scales.json``     per-tensor activation scales and ranges;
- ``calibration.cache`` TensorRT calibration cache (implicit INT8, e.g. for the DLA);
- ``manifest.json``   model, weights id, cut, method, images, file hashes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

from edgecloud.artifacts import read_manifest, sha256_file, write_manifest
from edgecloud.errors import ArtifactError, CalibrationError
from edgecloud.quantize.cpu_graph import to_uint8_activations
from edgecloud.quantize.export import DEFAULT_OPSET, INPUT_NAME, export_onnx
from edgecloud.quantize.quiet import quiet_logs
from edgecloud.quantize.trt_cache import write_cache
from edgecloud.quantize.validate import check_qdq

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_ROOT = "calibration"
MANIFEST = "manifest.json"
FORMAT = "edgecloud-int8-calibration/1"
INT8_MAX = 127
OUTPUT_SUFFIX = "_QuantizeLinear_Input"
# Quantize the inputs of these ops (TensorRT's recommended Q/DQ placement); Conv outputs are
# left in float so that Conv + activation fuse before the next quantizer.
QUANTIZED_OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Concat", "AveragePool"]


@dataclass
class CalibrationArtifacts:
    """Paths of one calibration's files and its manifest."""

    directory: Path
    manifest: Dict = field(default_factory=dict)

    fp32_name = "head_fp32.onnx"
    qdq_name = "head_qdq.onnx"
    cpu_name = "head_qdq_cpu.onnx"
    scales_name = "scales.json"
    cache_name = "calibration.cache"

    @property
    def fp32_onnx(self) -> Path:
        return self.directory / self.fp32_name

    @property
    def qdq_onnx(self) -> Path:
        return self.directory / self.qdq_name

    @property
    def cpu_onnx(self) -> Path:
        return self.directory / self.cpu_name

    @property
    def scales_json(self) -> Path:
        return self.directory / self.scales_name

    @property
    def trt_cache(self) -> Path:
        return self.directory / self.cache_name

    @classmethod
    def load(cls, directory: Union[str, Path]) -> CalibrationArtifacts:
        """Open a calibration directory; CalibrationError if it is missing or incomplete."""
        directory = Path(directory)
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            raise CalibrationError(
                f"no calibration in {directory} (missing {MANIFEST}); run `edgecloud calibrate`"
            )
        try:
            manifest = read_manifest(manifest_path, (FORMAT,))
        except ArtifactError as exc:
            raise CalibrationError(f"calibration manifest {exc}") from exc
        artifacts = cls(directory, manifest)
        for path in (artifacts.fp32_onnx, artifacts.qdq_onnx, artifacts.cpu_onnx):
            if not path.is_file():
                raise CalibrationError(f"calibration file {path} is missing")
        return artifacts

    def check(self, model: str, cut: str, weights_id: Optional[str] = None) -> None:
        """CalibrationError unless this calibration was made for ``model`` at ``cut``."""
        got = (self.manifest.get("model"), self.manifest.get("cut"))
        if got != (model, cut):
            raise CalibrationError(
                f"calibration {self.directory} is for {got[0]} at {got[1]}, not {model} at {cut}"
            )
        if weights_id and self.manifest.get("weights_id") not in (None, weights_id):
            raise CalibrationError(
                f"calibration {self.directory} was made with weights "
                f"{self.manifest.get('weights_id')}, not {weights_id}"
            )


def artifact_dir(model: str, cut: str, root: Union[str, Path] = DEFAULT_ROOT) -> Path:
    """``<root>/<model>/<cut>``."""
    return Path(root) / model / cut


class _Reader:
    """onnxruntime CalibrationDataReader over float32 NCHW batches."""

    def __init__(self, batches: Iterable[np.ndarray], input_name: str) -> None:
        self._batches: Iterator[np.ndarray] = iter(batches)
        self._input = input_name
        self.images = 0

    def get_next(self):
        batch = next(self._batches, None)
        if batch is None:
            return None
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self.images += batch.shape[0]
        return {self._input: batch}


def quantize_qdq(
    fp32_onnx: Union[str, Path],
    batches: Iterable[np.ndarray],
    out_path: Union[str, Path],
    *,
    method: str = "minmax",
    percentile: float = 99.99,
) -> int:
    """Calibrate ``fp32_onnx`` on ``batches`` and write the TensorRT-style QDQ graph.

    Returns the number of calibration images used.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method {method!r}; choose from {METHODS}")
    calib_method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]

    class Reader(_Reader, CalibrationDataReader):
        pass

    reader = Reader(batches, INPUT_NAME)
    with tempfile.TemporaryDirectory() as tmp, quiet_logs():
        prepared = Path(tmp) / "prepared.onnx"
        # Constant folding and shape inference; the result is plain ONNX (portable to TensorRT).
        quant_pre_process(str(fp32_onnx), str(prepared))
        quantize_static(
            str(prepared),
            str(out_path),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calib_method,
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,
                # TensorRT 8.x parses weights only as float -> Q -> DQ ("only activation types
                # allowed as input" otherwise) and wants one consumer per Q/DQ pair.
                "AddQDQPairToWeight": True,
                "DedicatedQDQPair": True,
                # The bias stays float: never inflate weight scales for an int32 bias (it
                # would zero whole channels of small-weight convolutions).
                "QDQDisableWeightAdjustForInt32Bias": True,
                "OpTypesToExcludeOutputQuantization": ["Conv", "ConvTranspose", "Gemm", "MatMul"],
                "CalibPercentile": percentile,
            },
        )
    if reader.images == 0:
        raise CalibrationError("no calibration images")
    return reader.images


def activation_scales(qdq_model) -> Dict[str, float]:
    """{activation tensor name: per-tensor scale} of a QDQ model's activation quantizers."""
    from onnx import numpy_helper

    inits = {init.name: init for init in qdq_model.graph.initializer}
    outputs = {o.name for o in qdq_model.graph.output}
    scales: Dict[str, float] = {}
    for node in qdq_model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
            scale = numpy_helper.to_array(inits[node.input[1]])
            if scale.size != 1:
                raise CalibrationError(f"activation {node.input[0]!r} has per-channel scales")
            name = node.input[0]
            # The quantizer renames a quantized graph output X to X + this suffix.
            if name.endswith(OUTPUT_SUFFIX) and name[: -len(OUTPUT_SUFFIX)] in outputs:
                name = name[: -len(OUTPUT_SUFFIX)]
            scales[name] = float(scale.reshape(()))
    return scales


class _OutputRange:
    """Largest absolute value of the fp32 head's output over the calibration batches (the
    range the CPU graph quantizes a float graph output to, min/max like the activations)."""

    def __init__(self, fp32_onnx: Path) -> None:
        import onnxruntime as ort

        self._session = ort.InferenceSession(str(fp32_onnx), providers=["CPUExecutionProvider"])
        self.amax = 0.0

    def track(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for batch in batches:
            out = self._session.run(None, {INPUT_NAME: np.ascontiguousarray(batch, np.float32)})[0]
            self.amax = max(self.amax, float(np.abs(out).max()))
            yield batch


def calibrate_module(
    head,
    input_shape: Sequence[int],
    batches: Iterable[np.ndarray],
    out_dir: Union[str, Path],
    *,
    method: str = "minmax",
    percentile: float = 99.99,
    opset: int = DEFAULT_OPSET,
    metadata: Optional[Dict] = None,
) -> CalibrationArtifacts:
    """Export ``head``, calibrate it on ``batches`` and write all artifacts to ``out_dir``."""
    import onnx
    import onnxruntime

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    artifacts = CalibrationArtifacts(out)
    start = time.perf_counter()
    export_onnx(head, input_shape, artifacts.fp32_onnx, opset=opset)
    output = _OutputRange(artifacts.fp32_onnx)
    images = quantize_qdq(
        artifacts.fp32_onnx,
        output.track(batches),
        artifacts.qdq_onnx,
        method=method,
        percentile=percentile,
    )
    qdq = onnx.load(str(artifacts.qdq_onnx))
    check_qdq(qdq)
    onnx.save(to_uint8_activations(qdq, output_amax=output.amax), str(artifacts.cpu_onnx))
    scales = activation_scales(qdq)
    artifacts.scales_json.write_text(
        json.dumps(
            {
                "format": "edgecloud-int8-scales/1",
                "method": method,
                "symmetric": True,
                "qmax": INT8_MAX,
                "tensors": {n: {"scale": s, "amax": s * INT8_MAX} for n, s in scales.items()},
                "output_amax": output.amax,
            },
            indent=1,
        )
        + "\n"
    )
    write_cache(artifacts.trt_cache, scales)
    artifacts.manifest = {
        "format": FORMAT,
        **(metadata or {}),
        "method": method,
        "percentile": percentile if method == "percentile" else None,
        "images": images,
        "input_shape": list(input_shape),
        "opset": opset,
        "onnxruntime": onnxruntime.__version__,
        "activation_tensors": len(scales),
        "output_amax": output.amax,
        "sha256": {
            p.name: sha256_file(p)
            for p in (artifacts.fp32_onnx, artifacts.qdq_onnx, artifacts.cpu_onnx)
        },
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_manifest(out / MANIFEST, artifacts.manifest)
    return artifacts


def calibrate(
    spec,
    cut: str,
    dataset,
    *,
    root: Union[str, Path] = DEFAULT_ROOT,
    method: str = "minmax",
    num_images: int = 128,
    batch_size: int = 16,
    workers: int = 2,
    percentile: float = 99.99,
    out_dir: Optional[Union[str, Path]] = None,
    on_bad_image: str = "stop",
    progress: bool = True,
) -> CalibrationArtifacts:
    """Calibrate the head of ``spec`` at ``cut`` on the first ``num_images`` of ``dataset``."""
    import torch
    from tqdm import tqdm

    from edgecloud.datasets import make_loader
    from edgecloud.partition import split

    if num_images < 1:
        raise CalibrationError(f"need at least one calibration image, got {num_images}")
    head, _ = split(spec, cut)
    subset = torch.utils.data.Subset(dataset, range(min(num_images, len(dataset))))
    files: List[str] = []

    def batches() -> Iterator[np.ndarray]:
        loader = make_loader(subset, batch_size, workers, on_bad_image)
        bar = tqdm(loader, desc=f"calibrate {cut}", unit="batch", disable=not progress)
        for images, _labels, names in bar:
            files.extend(names)
            yield images.numpy()

    directory = Path(out_dir) if out_dir else artifact_dir(spec.name, cut, root)
    artifacts = calibrate_module(
        head,
        spec.input_shape,
        batches(),
        directory,
        method=method,
        percentile=percentile,
        metadata={"model": spec.name, "weights_id": spec.weights_id, "cut": cut},
    )
    artifacts.manifest["calibration_files"] = files
    artifacts.manifest["calibration_files_sha256"] = hashlib.sha256(
        "\n".join(files).encode()
    ).hexdigest()
    write_manifest(directory / MANIFEST, artifacts.manifest)
    log.info("calibration written to %s", directory)
    return artifacts


__all__ = [
    "METHODS",
    "CalibrationArtifacts",
    "activation_scales",
    "artifact_dir",
    "calibrate",
    "calibrate_module",
    "quantize_qdq",
]
