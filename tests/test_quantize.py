"""INT8 calibration: export, TensorRT-rule validator, caches, CPU graph, accuracy on real images."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgecloud.backends import create_head_runner
from edgecloud.datasets import ImageFolder, make_loader
from edgecloud.errors import CalibrationError
from edgecloud.partition import split
from edgecloud.quantize import (
    CalibrationArtifacts,
    calibrate,
    check_qdq,
    export_onnx,
    format_cache,
    parse_cache,
    to_uint8_activations,
    validate_qdq,
)
from edgecloud.quantize.export import compare_with_torch, io_shapes
from edgecloud.quantize.trt_cache import trt_version_number, with_header

CALIBRATION_IMAGES = 64  # as in conftest's int8_calibrations
EVAL_IMAGES = 256  # images 64..319: disjoint from the calibration images


@pytest.fixture(scope="session")
def dataset(lite0, samples_dir):
    return ImageFolder(samples_dir, lite0.preprocessing)


@pytest.fixture(scope="session")
def held_out(dataset):
    return torch.utils.data.Subset(
        dataset, range(CALIBRATION_IMAGES, CALIBRATION_IMAGES + EVAL_IMAGES)
    )


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- export -------------------------------------------------------------------------------


def test_export_matches_torch_with_dynamic_batch(lite0, tmp_path):
    head, _ = split(lite0, "blocks.2")
    path = export_onnx(head, lite0.input_shape, tmp_path / "head.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 13
    (in_shape, out_shape) = io_shapes(path)
    assert in_shape == ("batch", 3, 224, 224) and out_shape[0] == "batch"
    assert compare_with_torch(head, path, lite0.input_shape) < 1e-4
    # TF "SAME" padding is folded into Conv pads: no shape arithmetic left for TensorRT.
    assert {n.op_type for n in model.graph.node} <= {"Conv", "Clip", "Add"}


# --- validator ----------------------------------------------------------------------------


def _qdq_model(
    *,
    act_zero_point=0,
    act_dtype=np.int8,
    act_scale=(0.05,),
    weight_axis=0,
    weight_dtype=np.int8,
    weight_as_initializer=False,
    bias_qdq=False,
    shared_dq=False,
    opset=17,
):
    """A one-Conv QDQ model (TensorRT form by default) with one rule optionally broken."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w_scale = (np.abs(weight).reshape(4, -1).max(1) / 127).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array(act_scale, np.float32).reshape(-1)[0:None], "x_scale"),
        numpy_helper.from_array(np.array([act_zero_point] * len(act_scale), act_dtype), "x_zp"),
        numpy_helper.from_array(w_scale, "w_scale"),
        numpy_helper.from_array(np.zeros(4, weight_dtype), "w_zp"),
    ]
    if len(act_scale) == 1:  # per-tensor: scalar scale and zero point
        inits[0] = numpy_helper.from_array(np.float32(act_scale[0]), "x_scale")
        inits[1] = numpy_helper.from_array(np.array(act_zero_point, act_dtype), "x_zp")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], axis=1),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xdq"], axis=1),
    ]
    if weight_as_initializer:
        q = np.clip(np.rint(weight / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
        inits.append(numpy_helper.from_array(q, "wq"))
    else:
        inits.append(numpy_helper.from_array(weight, "w"))
        nodes.append(
            helper.make_node("QuantizeLinear", ["w", "w_scale", "w_zp"], ["wq"], axis=weight_axis)
        )
    nodes.append(
        helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zp"], ["wdq"], axis=weight_axis)
    )
    conv_inputs = ["xdq", "wdq"]
    if bias_qdq:
        inits += [
            numpy_helper.from_array(np.zeros(4, np.int32), "bq"),
            numpy_helper.from_array(np.full(4, 0.01, np.float32), "b_scale"),
            numpy_helper.from_array(np.zeros(4, np.int32), "b_zp"),
        ]
        nodes.append(helper.make_node("DequantizeLinear", ["bq", "b_scale", "b_zp"], ["b"], axis=0))
        conv_inputs.append("b")
    nodes.append(helper.make_node("Conv", conv_inputs, ["y"], pads=[1, 1, 1, 1]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])]
    if shared_dq:
        nodes.append(helper.make_node("Relu", ["xdq"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 3, 8, 8]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        outputs,
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _rules(model) -> set:
    return {v.rule for v in validate_qdq(model)}


def test_validator_accepts_tensorrt_form():
    assert validate_qdq(_qdq_model()) == []


@pytest.mark.parametrize(
    ("broken", "rule"),
    [
        (dict(act_zero_point=3), "zero-point"),
        (dict(act_dtype=np.uint8, act_zero_point=128), "int8"),
        (dict(act_scale=(0.05, 0.04, 0.03)), "per-tensor"),
        (dict(weight_axis=1), "axis"),
        (dict(bias_qdq=True), "int32"),
        (dict(opset=12), "opset"),
        (dict(weight_as_initializer=True), "weight-storage"),
        (dict(shared_dq=True), "dedicated-pair"),
    ],
)
def test_validator_catches_broken_models(broken, rule):
    violations = validate_qdq(_qdq_model(**broken))
    assert rule in {v.rule for v in violations}, violations
    for v in violations:
        assert v.node and v.detail


def test_validator_lists_every_violation():
    model = _qdq_model(act_zero_point=5, weight_axis=1, bias_qdq=True)
    assert {"zero-point", "axis", "int32"} <= _rules(model)
    with pytest.raises(CalibrationError, match="violation"):
        check_qdq(model)


def test_validator_rejects_float_model(lite0, tmp_path):
    head, _ = split(lite0, "blocks.0")
    path = export_onnx(head, lite0.input_shape, tmp_path / "fp32.onnx")
    assert _rules(onnx.load(str(path))) == {"no-qdq"}


# --- TensorRT calibration cache -----------------------------------------------------------


def test_calibration_cache_format_round_trip():
    text = format_cache({"input": 1 / 127, "/conv/Relu_output_0": 0.5}, version="8502")
    assert text.splitlines() == [
        "TRT-8502-EntropyCalibration2",
        "input: 3c010204",
        "/conv/Relu_output_0: 3f000000",
    ]
    header, scales = parse_cache(text)
    assert header == "TRT-8502-EntropyCalibration2"
    assert scales["input"] == pytest.approx(1 / 127)
    assert trt_version_number("10.3.0.26") == "10300" and trt_version_number("8.6.2") == "8602"
    assert with_header(text, "10.3.0").decode().startswith("TRT-10300-EntropyCalibration2\n")


@pytest.mark.parametrize("bad", ["", "hello\nx: 3f000000\n", "TRT-8502-X\nx 3f000000\n"])
def test_calibration_cache_rejects_garbage(bad):
    with pytest.raises(CalibrationError):
        parse_cache(bad)


# --- calibration artifacts ----------------------------------------------------------------


def test_calibration_artifacts(int8_calibrations, lite0):
    art = int8_calibrations("blocks")
    manifest = json.loads((art.directory / "manifest.json").read_text())
    assert manifest["model"] == lite0.name and manifest["cut"] == "blocks"
    assert manifest["weights_id"] == lite0.weights_id
    assert manifest["images"] == CALIBRATION_IMAGES
    assert validate_qdq(art.qdq_onnx) == []
    scales = json.loads(art.scales_json.read_text())["tensors"]
    _, cache = parse_cache(art.trt_cache.read_text())
    assert set(cache) == set(scales) and len(cache) > 10
    for name, entry in scales.items():
        assert cache[name] == pytest.approx(entry["scale"], rel=1e-6)
        assert entry["amax"] == pytest.approx(entry["scale"] * 127)
    # Cache names are tensors of the fp32 graph (what TensorRT implicit INT8 parses).
    fp32 = onnx.load(str(art.fp32_onnx)).graph
    tensors = {o for n in fp32.node for o in n.output} | {i.name for i in fp32.input}
    assert set(cache) <= tensors


def test_calibration_load_errors(int8_calibrations, tmp_path):
    with pytest.raises(CalibrationError, match="no calibration"):
        CalibrationArtifacts.load(tmp_path)
    art = CalibrationArtifacts.load(int8_calibrations("blocks").directory)
    with pytest.raises(CalibrationError, match="blocks.2"):
        art.check("efficientnet_lite0", "blocks.2")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CalibrationError, match="unreadable"):
        CalibrationArtifacts.load(tmp_path)


def test_unknown_method_and_no_images(lite0, dataset, tmp_path):
    with pytest.raises(CalibrationError, match="method"):
        calibrate(lite0, "blocks.0", dataset, method="kl", num_images=2, out_dir=tmp_path)
    with pytest.raises(CalibrationError, match="at least one"):
        calibrate(lite0, "blocks.0", dataset, num_images=0, out_dir=tmp_path)


# --- the fast CPU graph -------------------------------------------------------------------


def test_cpu_graph_exact_form_matches_tensorrt_graph(int8_calibrations, dataset):
    art = int8_calibrations("blocks")
    qdq = onnx.load(str(art.qdq_onnx))
    exact = to_uint8_activations(qdq, unsigned_after_relu=False)
    batch = torch.stack([dataset[i][0] for i in range(600, 604)]).numpy()
    import onnxruntime as ort

    def run(model):
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"input": batch})[0]

    signed, unsigned = run(qdq), run(exact)
    # Same grid (int8 zero point 0 == uint8 zero point 128); ONNX Runtime's fused integer
    # kernels requantize in fixed point, so single rounding steps differ and propagate.
    assert cosine(signed, unsigned) > 0.995
    fast_model = onnx.load(str(art.cpu_onnx))
    fast = run(fast_model)
    assert cosine(signed, fast) > 0.99
    # the head ends in a projection Conv: its float output is quantized with the calibrated
    # range, so ONNX Runtime fuses it (no fp32 Conv left, the output is a DequantizeLinear)
    assert art.manifest["output_amax"] > 0
    producer = next(n for n in fast_model.graph.node if "feature" in n.output)
    assert producer.op_type == "DequantizeLinear"
    weights = {i.name for i in fast_model.graph.initializer}
    float_convs = [
        n for n in fast_model.graph.node
        if n.op_type == "Conv" and n.input[0] in weights
    ]  # fmt: skip
    assert not float_convs


def test_onnxruntime_backend_sessions_do_not_spin():
    import onnxruntime as ort

    from edgecloud.onnxrt import session_options

    options = session_options(ort, 2)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1


def test_int8_runners_agree(int8_calibrations, lite0, dataset):
    art = int8_calibrations("blocks")
    batch = torch.stack([dataset[i][0] for i in range(700, 708)]).numpy()
    ref = create_head_runner("torch", lite0, "blocks").run(batch)
    cpu = create_head_runner("onnxruntime", lite0, "blocks", int8=True, calibration=art.directory)
    trt_graph = create_head_runner(
        "onnxruntime",
        lite0,
        "blocks",
        int8=True,
        calibration=art.directory,
        int8_graph="tensorrt",
    )
    a, b = cpu.run(batch), trt_graph.run(batch)
    assert a.shape == b.shape == ref.shape
    assert cosine(a, b) > 0.99
    assert cosine(a, ref) > 0.98 and cosine(b, ref) > 0.98
    assert cpu.describe()["graph"] == "qdq-uint8" and trt_graph.describe()["graph"] == "qdq-int8"
    assert cpu.describe()["precision"] == "int8"


def test_int8_runner_rejects_calibration_of_other_cut(int8_calibrations, lite0):
    art = int8_calibrations("blocks")
    with pytest.raises(CalibrationError, match="blocks"):
        create_head_runner("onnxruntime", lite0, "blocks.2", int8=True, calibration=art.directory)


# --- accuracy on real images --------------------------------------------------------------


@pytest.mark.parametrize("cut", ["blocks.2", "blocks"])
def test_int8_top1_within_one_point(cut, int8_calibrations, lite0, held_out):
    art = int8_calibrations(cut)
    _, tail = split(lite0, cut)
    runner = create_head_runner("onnxruntime", lite0, cut, int8=True, calibration=art.directory)
    fp32_hits = int8_hits = agree = 0
    with torch.inference_mode():
        for images, labels, _ in make_loader(held_out, batch_size=64, workers=2):
            ref = lite0.module(images).argmax(1)
            got = tail(torch.from_numpy(runner.run(images.numpy()))).argmax(1)
            fp32_hits += int((ref == labels).sum())
            int8_hits += int((got == labels).sum())
            agree += int((ref == got).sum())
    fp32_top1, int8_top1 = fp32_hits / EVAL_IMAGES, int8_hits / EVAL_IMAGES
    assert fp32_top1 > 0.8  # real weights, real images
    assert int8_top1 >= fp32_top1 - 0.01, (cut, fp32_top1, int8_top1)
    assert agree / EVAL_IMAGES > 0.95


def test_calibrate_command(samples_dir, tmp_path, capsys):
    from edgecloud.cli import main

    out = tmp_path / "cal"
    code = main(
        [
            "calibrate", "--cut", "blocks.0", "--data", str(samples_dir), "--calib-images", "4",
            "--verify", "2", "--calibration", str(out), "--json", str(tmp_path / "c.json"),
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((tmp_path / "c.json").read_text())
    assert summary["cut"] == "blocks.0" and summary["images"] == 4
    assert summary["verify_images"] == 2 and summary["cosine_cpu_graph"] > 0.9
    assert (
        summary["calibration_files"][1]
        == sorted(p.name for p in (samples_dir / "images").iterdir())[-1]
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert "0999_n15075141.jpg" in json.dumps(manifest)  # the last image, not the first
    assert validate_qdq(CalibrationArtifacts.load(out).qdq_onnx) == []
    assert "cosine_tensorrt_graph" in capsys.readouterr().out
