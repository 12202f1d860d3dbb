"""Export a head (any ``torch.nn.Module``) to ONNX with a dynamic batch axis, and check it.

The ``torch.export`` based exporter is used: it specializes the static spatial size, so
shape arithmetic such as TensorFlow "SAME" padding folds into plain ``Conv`` pads (the
TorchScript exporter keeps it as Shape/Gather/Ceil/Pad subgraphs, which TensorRT and the
quantizer handle badly). The result is converted to the requested opset.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Sequence, Tuple, Union

import numpy as np

from edgecloud.errors import EdgecloudError
from edgecloud.quantize.quiet import quiet_logs

DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "feature"
MAX_BATCH = 1024
EXPORT_OPSET = 18  # torch.export's native opset; converted down afterwards


class ExportError(EdgecloudError):
    """The head could not be exported, or the export does not reproduce the torch head."""


def export_onnx(
    module,
    input_shape: Sequence[int],
    path: Union[str, Path],
    *,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    atol: float = 1e-3,
    names: Tuple[str, str] = (INPUT_NAME, OUTPUT_NAME),
    what: str = "head",
) -> Path:
    """Export ``module`` (eval mode, CPU) to ``path``; input ``names[0]`` (N, *input_shape),
    output ``names[1]`` (``what`` names the part in errors: a head, a tail).

    The batch axis is dynamic. With ``check`` the file is verified with ``onnx.checker`` and
    by running it in ONNX Runtime against the torch module on a random batch of 2.
    """
    import onnx
    import torch
    from onnx import version_converter

    if opset < 13:
        raise ExportError(f"opset {opset} < 13: TensorRT explicit quantization needs >= 13")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    example = torch.randn(2, *input_shape)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with torch.no_grad(), warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                (example,),
                None,
                input_names=[names[0]],
                output_names=[names[1]],
                dynamic_shapes=({0: batch},),
                opset_version=max(opset, EXPORT_OPSET),
                dynamo=True,
                optimize=True,
                verbose=False,
            )
    except Exception as exc:  # torch.export raises many types; report them as one
        raise ExportError(f"cannot export the {what} to ONNX: {type(exc).__name__}: {exc}") from exc
    model = program.model_proto
    if _opset(model) != opset:
        model = version_converter.convert_version(model, opset)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    if check:
        diff = compare_with_torch(module, path, input_shape)
        if diff > atol:
            raise ExportError(
                f"ONNX export of the {what} differs from torch by {diff:.3g} > {atol}"
            )
    return path


def _opset(model) -> int:
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's progress prints (stdout) and INFO logs."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), quiet_logs():
        yield


def compare_with_torch(module, onnx_path: Union[str, Path], input_shape: Sequence[int]) -> float:
    """Largest absolute difference between ``module`` and the ONNX file on a random batch of 2."""
    import onnxruntime as ort
    import torch

    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = module(x).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    if out.shape != ref.shape:
        raise ExportError(f"ONNX output shape {out.shape} != torch output shape {ref.shape}")
    return float(np.max(np.abs(out - ref)))


def io_shapes(onnx_path: Union[str, Path]) -> Tuple[Tuple, Tuple]:
    """(input shape, output shape) of an ONNX file, batch axis as a string."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return _dims(graph.input[0]), _dims(graph.output[0])


def _dims(value_info) -> Tuple:
    return tuple(d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim)


ENCODER_OUTPUT = "latents"


def append_encoder(head_onnx: Union[str, Path], learned, path: Union[str, Path]) -> Path:
    """The edge side of a learned codec (:class:`~edgecloud.codec.LearnedCodec`) as one graph:
    the head graph ``head_onnx`` (fp32, or a calibration's INT8 QDQ graph) followed by the
    codec's encoder, image -> latents (N, L, h, w), which the entropy model codes
    (``FeatureCodec.encode_latents``). A TensorRT engine or ONNX Runtime session of it runs
    all of the edge's arithmetic. Checked in ONNX Runtime against the head graph followed by
    the torch encoder."""
    import onnx
    from onnx import compose

    head = onnx.load(str(head_onnx))
    feature_shape = _dims(head.graph.output[0])[1:]
    config = learned.config
    if feature_shape != (config.channels, config.height, config.width):
        raise ExportError(
            f"learned codec {learned.name} encodes ({config.channels}, {config.height}, "
            f"{config.width}) features; the head graph {head_onnx} gives {feature_shape}"
        )
    encoder = learned.encoder_module()
    path = Path(path)
    encoder_path = path.with_name(f"{path.stem}.encoder.onnx")
    try:
        export_onnx(
            encoder,
            feature_shape,
            encoder_path,
            opset=_opset(head),
            names=(OUTPUT_NAME, ENCODER_OUTPUT),
            what="learned encoder",
        )
        encoder_graph = onnx.load(str(encoder_path))
    finally:
        encoder_path.unlink(missing_ok=True)
    encoder_graph.ir_version = head.ir_version
    output = head.graph.output[0].name
    merged = compose.merge_models(
        head, encoder_graph, io_map=[(output, OUTPUT_NAME)], prefix2="encoder/"
    )
    onnx.checker.check_model(merged, full_check=True)
    onnx.save(merged, str(path))
    _check_appended(head_onnx, encoder, path, learned)
    return path


def _check_appended(head_onnx: Path, encoder, path: Path, learned) -> None:
    import onnxruntime as ort
    import torch

    head = ort.InferenceSession(str(head_onnx), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(
        (2, *head.get_inputs()[0].shape[1:]), dtype=np.float32
    )
    feature = head.run(None, {head.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        expected = encoder(torch.from_numpy(feature)).numpy()
    merged = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    latents = merged.run(None, {merged.get_inputs()[0].name: x})[0]
    diff = float(np.max(np.abs(latents - expected))) if latents.shape == expected.shape else np.inf
    if diff > 1e-2 * max(1.0, float(np.max(np.abs(expected)))):
        raise ExportError(
            f"head + learned encoder {learned.name} in ONNX differs from the head graph and the "
            f"torch encoder by {diff:.3g}"
        )
