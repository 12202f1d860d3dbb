"""Check a QDQ ONNX model against TensorRT's explicit-quantization rules.

Rules: opset >= 13; every QuantizeLinear/DequantizeLinear is INT8 with zero point 0
(symmetric); activations (anything that is not a constant weight) use one per-tensor scale;
per-channel scales only for weights, on axis 0; no INT32 (bias) Q/DQ; scales positive;
weights stored as float with a Q -> DQ pair (TensorRT 8.x refuses a DequantizeLinear that
reads an INT8 initializer: "only activation types allowed as input"); every DequantizeLinear
feeds exactly one node (dedicated Q/DQ pairs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Union

import numpy as np

from edgecloud.errors import CalibrationError

MIN_OPSET = 13
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class Violation:
    """One broken rule: the node (or '<model>') and what is wrong."""

    node: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.node}: [{self.rule}] {self.detail}"


def validate_qdq(model: Union[str, Path, Any]) -> List[Violation]:
    """Every violation of the TensorRT explicit-quantization rules in ``model`` (empty: OK)."""
    import onnx
    from onnx import numpy_helper

    if not hasattr(model, "graph"):
        model = onnx.load(str(model))
    graph = model.graph
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    constants = {
        node.output[0]: numpy_helper.to_array(node.attribute[0].t)
        for node in graph.node
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"
    }
    inits.update(constants)
    q_of = {n.output[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}
    consumers: dict = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    graph_outputs = {o.name for o in graph.output}
    out: List[Violation] = []

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        out.append(Violation("<model>", "opset", f"opset {opset} < {MIN_OPSET}"))
    qdq_nodes = [n for n in graph.node if n.op_type in QDQ_OPS]
    if not qdq_nodes:
        out.append(Violation("<model>", "no-qdq", "no QuantizeLinear/DequantizeLinear nodes"))

    for node in qdq_nodes:
        name = node.name or f"{node.op_type}({node.input[0]})"
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        source = q_of[node.input[0]].input[0] if node.input[0] in q_of else node.input[0]
        is_weight = source in inits
        if node.op_type == "DequantizeLinear":
            if node.input[0] in inits:
                out.append(
                    Violation(
                        name,
                        "weight-storage",
                        "reads a quantized initializer; TensorRT 8.x needs float weights with "
                        "a QuantizeLinear -> DequantizeLinear pair",
                    )
                )
            users = len(consumers.get(node.output[0], []))
            if users > 1 or (users == 0 and node.output[0] not in graph_outputs):
                out.append(
                    Violation(name, "dedicated-pair", f"output feeds {users} nodes, not exactly 1")
                )
        if node.domain not in ("", "ai.onnx"):
            out.append(Violation(name, "domain", f"op domain {node.domain!r} is not ONNX"))
        if len(node.input) < 2 or node.input[1] not in inits:
            out.append(Violation(name, "scale", "scale is not a constant"))
            continue
        scale = inits[node.input[1]]
        if scale.size and (not np.all(np.isfinite(scale)) or np.any(scale <= 0)):
            out.append(Violation(name, "scale", "scale has non-positive or non-finite values"))
        dtype = _quant_dtype(node, inits, q_of)
        if dtype == np.int32:
            out.append(Violation(name, "int32", "INT32 Q/DQ (quantized bias) is not supported"))
        elif dtype is not None and dtype != np.int8:
            out.append(Violation(name, "int8", f"quantized type {np.dtype(dtype).name}, not int8"))
        if len(node.input) >= 3 and node.input[2]:
            zp = inits.get(node.input[2])
            if zp is None:
                out.append(Violation(name, "zero-point", "zero point is not a constant"))
            elif np.any(zp != 0):
                out.append(Violation(name, "zero-point", f"non-zero zero point {zp.ravel()[:4]}"))
        if scale.size > 1:
            if not is_weight:
                out.append(
                    Violation(
                        name, "per-tensor", f"activation has {scale.size} scales (per-channel)"
                    )
                )
            elif axis != 0:
                out.append(
                    Violation(name, "axis", f"per-channel weight scale on axis {axis}, not 0")
                )
    return out


def _quant_dtype(node, inits, q_of):
    """Quantized element type of a Q/DQ node, from its zero point or quantized input."""
    if len(node.input) >= 3 and node.input[2] in inits:
        return inits[node.input[2]].dtype.type
    if node.op_type == "DequantizeLinear" and node.input[0] in inits:
        return inits[node.input[0]].dtype.type
    if node.op_type == "DequantizeLinear" and node.input[0] in q_of:
        return _quant_dtype(q_of[node.input[0]], inits, {})
    if node.op_type == "QuantizeLinear":  # no zero point: ONNX default is uint8
        return np.uint8
    return None


def check_qdq(model) -> None:
    """Raise CalibrationError listing every violation, if any."""
    violations = validate_qdq(model)
    if violations:
        lines = "\n  ".join(str(v) for v in violations)
        raise CalibrationError(
            f"{len(violations)} TensorRT explicit-quantization violation(s):\n  {lines}"
        )
