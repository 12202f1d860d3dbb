"""HeadRunner backends (torch, onnxruntime fp32): equivalence, interface and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgecloud.backends import BACKENDS, HeadRunner, create_head_runner
from edgecloud.errors import BackendUnavailableError, CalibrationError, HeadInputError
from edgecloud.partition import split

CUT = "blocks.3"


@pytest.fixture(scope="module")
def batch(lite0, samples_dir):
    from edgecloud.datasets import ImageFolder

    ds = ImageFolder(samples_dir, lite0.preprocessing, limit=4)
    return torch.stack([ds[i][0] for i in range(4)]).numpy()


@pytest.fixture(scope="module")
def torch_runner(lite0):
    return create_head_runner("torch", lite0, CUT)


@pytest.fixture(scope="module")
def ort_runner(lite0):
    runner = create_head_runner("onnxruntime", lite0, CUT, threads=2)
    yield runner
    runner.close()


def test_torch_runner_is_the_partition_head(lite0, torch_runner, batch):
    head, _ = split(lite0, CUT)
    with torch.inference_mode():
        ref = head(torch.from_numpy(batch)).numpy()
    out = torch_runner.run(batch)
    assert isinstance(torch_runner, HeadRunner)
    assert out.dtype == np.float32 and out.shape == (4, 80, 14, 14)
    np.testing.assert_array_equal(out, ref)


def test_onnxruntime_fp32_matches_torch(torch_runner, ort_runner, batch):
    ref = torch_runner.run(batch)
    for n in (1, 4):  # dynamic batch axis
        out = ort_runner.run(batch[:n])
        assert out.shape == ref[:n].shape
        np.testing.assert_allclose(out, ref[:n], atol=2e-3, rtol=1e-3)


def test_describe(torch_runner, ort_runner, lite0):
    for runner, backend in ((torch_runner, "torch"), (ort_runner, "onnxruntime")):
        info = runner.describe()
        assert info["backend"] == backend and info["model"] == lite0.name
        assert info["cut"] == CUT and info["precision"] == "fp32"
        assert info["input_shape"] == [3, 224, 224]
    assert len(ort_runner.describe()["onnx_sha256"]) == 64


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((1, 3, 224, 224), np.float64), "float32"),
        (np.zeros((3, 224, 224), np.float32), r"\(N, 3, 224, 224\)"),
        (np.zeros((1, 3, 100, 100), np.float32), "got"),
        (np.zeros((0, 3, 224, 224), np.float32), "empty"),
        ([[1.0, 2.0]], "numpy array"),
    ],
)
def test_bad_input(torch_runner, ort_runner, bad, match):
    for runner in (torch_runner, ort_runner):
        with pytest.raises(HeadInputError, match=match):
            runner.run(bad)


def test_unknown_backend_and_options(lite0):
    with pytest.raises(BackendUnavailableError, match="unknown backend"):
        create_head_runner("openvino", lite0, CUT)
    with pytest.raises(BackendUnavailableError, match="fp32 only"):
        create_head_runner("torch", lite0, CUT, int8=True)
    with pytest.raises(BackendUnavailableError, match="device"):
        create_head_runner("onnxruntime", lite0, CUT, device="tpu")
    assert BACKENDS == ("torch", "onnxruntime", "tensorrt")


def test_int8_without_calibration(lite0, tmp_path):
    with pytest.raises(CalibrationError, match="edgecloud calibrate"):
        create_head_runner("onnxruntime", lite0, CUT, int8=True, calibration=tmp_path / "missing")


def test_unknown_cut(lite0):
    from edgecloud.errors import CutPointError

    with pytest.raises(CutPointError):
        create_head_runner("onnxruntime", lite0, "blocks.99")
