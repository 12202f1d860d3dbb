"""Derive a fast CPU graph from a TensorRT-style QDQ graph, from the same calibration.

ONNX Runtime's fast x86 integer kernels want *unsigned* activations, and fuse
``DQ -> Conv -> Q`` into ``QLinearConv`` only when nothing (a ``Clip``) sits between the
convolution and its quantizer. The TensorRT graph is signed symmetric INT8 (zero point 0).
Each activation quantizer is rewritten:

- after ``Relu`` / ``Clip(min=0)`` (the tensor is never negative): uint8, zero point 0, scale
  ``amax / 255`` (the same calibrated range on a twice finer grid); the quantizer's own clamp
  then does the clipping, so ONNX Runtime drops the ``Clip`` and fuses the convolution;
- elsewhere: uint8 with zero point 128 and the same scale, which is exactly the signed grid.

Float weights with a Q -> DQ pair (the TensorRT 8.x form) are folded into INT8 initializers
(the same values ONNX Runtime's QuantizeLinear would compute), and the per-consumer copies of
an activation quantizer (TensorRT's dedicated Q/DQ pairs) are merged into one, so that a
convolution whose output feeds two nodes still fuses.

With ``unsigned_after_relu=False`` every activation gets the exact zero-point-128 form
(bit-for-bit the TensorRT grid, but the ``Clip`` nodes stay and ONNX Runtime is slower).

A graph output that comes straight from a float ``Conv`` (the head ends in a projection
convolution, whose output the quantizer leaves float) keeps that convolution in fp32 and makes
ONNX Runtime dequantize its weights on every call. Given the calibrated ``output_amax`` the
output is quantized too (the signed symmetric grid as uint8, zero point 128), so that the
convolution fuses into ``QLinearConv`` and only the output is dequantized (measured at Lite0
``blocks``: about 0.3 ms of 4.4 ms).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from edgecloud.errors import CalibrationError

UINT8_ZERO_POINT = 128
INT8_MAX = 127
UINT8_MAX = 255


def to_uint8_activations(
    model, *, unsigned_after_relu: bool = True, output_amax: Optional[float] = None
):
    """Return a copy of the QDQ ``model`` (ModelProto) with uint8 activations (see module doc);
    with ``output_amax`` a float graph output is quantized as well."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    rewritten: Dict[str, tuple] = {}  # Q output name -> (scale name, zero point name)
    _fold_weight_quantizers(graph, inits)
    _merge_duplicate_quantizers(graph, inits)
    producers = {out: node for node in graph.node for out in node.output}

    def add_init(array: np.ndarray, name: str) -> str:
        graph.initializer.append(numpy_helper.from_array(array, name))
        inits[name] = graph.initializer[-1]
        return name

    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits:
            continue
        if len(node.input) < 3 or node.input[2] not in inits or node.input[1] not in inits:
            raise CalibrationError(f"QuantizeLinear {node.name!r} lacks constant scale/zero point")
        zp = numpy_helper.to_array(inits[node.input[2]])
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        if zp.dtype != np.int8 or np.any(zp != 0):
            raise CalibrationError(
                f"activation zero point {node.input[2]!r} is not signed INT8 zero: cannot derive "
                "the uint8 graph (validate the model first)"
            )
        clip_max = _nonnegative_activation_max(producers.get(node.input[0]), inits)
        amax = scale * INT8_MAX
        base = node.output[0]
        if unsigned_after_relu and clip_max is not None and np.all(amax <= clip_max * (1 + 1e-6)):
            new_scale = add_init((amax / UINT8_MAX).astype(np.float32), f"{base}_scale_u8")
            new_zp = add_init(np.zeros(zp.shape, dtype=np.uint8), f"{base}_zero_point_u8")
        else:
            new_scale = node.input[1]
            new_zp = add_init(np.full(zp.shape, UINT8_ZERO_POINT, np.uint8), f"{base}_zp_u8")
        node.input[1], node.input[2] = new_scale, new_zp
        rewritten[node.output[0]] = (new_scale, new_zp)

    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] in inits:
            continue
        if node.input[0] not in rewritten:
            raise CalibrationError(
                f"DequantizeLinear {node.name!r} reads {node.input[0]!r}, which is not the "
                "output of an activation QuantizeLinear"
            )
        node.input[1], node.input[2] = rewritten[node.input[0]]

    if output_amax:
        _quantize_float_output(graph, inits, output_amax, add_init)
    used = {name for node in graph.node for name in node.input}
    for init in list(graph.initializer):
        if init.name not in used and init.name not in {i.name for i in graph.input}:
            graph.initializer.remove(init)
    return model


def _quantize_float_output(graph, inits, amax: float, add_init) -> None:
    """Q -> DQ (uint8, zero point 128, scale amax / 127) behind a graph output computed in
    float by a Conv whose input is dequantized (so that ONNX Runtime fuses it)."""
    from onnx import helper

    output = graph.output[0].name
    producer = next((n for n in graph.node if output in n.output), None)
    if producer is None or producer.op_type != "Conv":
        return  # already quantized (e.g. DequantizeLinear) or not a convolution
    inner = f"{output}_float"
    producer.output[list(producer.output).index(output)] = inner
    scale = add_init(np.array(amax / INT8_MAX, dtype=np.float32), f"{output}_scale_u8")
    zero = add_init(np.array(UINT8_ZERO_POINT, dtype=np.uint8), f"{output}_zp_u8")
    graph.node.extend(
        [
            helper.make_node("QuantizeLinear", [inner, scale, zero], [f"{output}_q"]),
            helper.make_node("DequantizeLinear", [f"{output}_q", scale, zero], [output]),
        ]
    )


def _fold_weight_quantizers(graph, inits) -> None:
    """Replace ``float initializer -> QuantizeLinear`` by the quantized initializer."""
    from onnx import numpy_helper

    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits:
            continue
        weight = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zp = numpy_helper.to_array(inits[node.input[2]])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.size > 1:
            shape = [1] * weight.ndim
            shape[axis] = scale.size
            scale, zp_b = scale.reshape(shape), zp.reshape(shape)
        else:
            zp_b = zp
        info = np.iinfo(zp.dtype)
        q = np.clip(np.rint(weight / scale) + zp_b.astype(np.int32), info.min, info.max)
        name = f"{node.output[0]}_folded"
        graph.initializer.append(numpy_helper.from_array(q.astype(zp.dtype), name))
        inits[name] = graph.initializer[-1]
        for other in graph.node:
            for i, tensor in enumerate(other.input):
                if tensor == node.output[0]:
                    other.input[i] = name
        graph.node.remove(node)


def _merge_duplicate_quantizers(graph, inits) -> None:
    """Keep one activation QuantizeLinear per (input, scale, zero point); rewire the others."""
    from onnx import numpy_helper

    first = {}
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] in inits:
            continue
        scale = numpy_helper.to_array(inits[node.input[1]]).tobytes()
        zp = numpy_helper.to_array(inits[node.input[2]]).tobytes()
        key = (node.input[0], scale, zp)
        if key not in first:
            first[key] = node.output[0]
            continue
        for other in graph.node:
            for i, tensor in enumerate(other.input):
                if tensor == node.output[0]:
                    other.input[i] = first[key]
        graph.node.remove(node)


def _nonnegative_activation_max(node, inits) -> Optional[float]:
    """Upper clip bound if ``node`` is Relu (inf) or Clip with min 0, else None."""
    from onnx import numpy_helper

    if node is None:
        return None
    if node.op_type == "Relu":
        return float("inf")
    if node.op_type != "Clip" or len(node.input) < 2 or node.input[1] not in inits:
        return None
    low = float(numpy_helper.to_array(inits[node.input[1]]))
    if low != 0.0:
        return None
    if len(node.input) < 3 or not node.input[2]:
        return float("inf")
    if node.input[2] not in inits:
        return None
    return float(numpy_helper.to_array(inits[node.input[2]]))
