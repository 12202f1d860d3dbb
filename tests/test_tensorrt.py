"""TensorRT backend. Runs only where TensorRT, PyCUDA and an NVIDIA GPU are present (a Jetson
with JetPack 5.1/6.x, or a PC with `pip install tensorrt pycuda`); skipped with the reason
elsewhere. Nothing here fakes TensorRT."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from edgecloud.backends import create_head_runner
from edgecloud.errors import BackendUnavailableError

CUT = "blocks.4"


def _gpu_reason() -> str:
    """Why TensorRT tests cannot run here ('' if they can)."""
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (JetPack or `pip install tensorrt`)"
    if importlib.util.find_spec("pycuda") is None:
        return "pycuda is not installed"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            return "no CUDA GPU"
    except Exception as exc:  # any driver problem means: cannot run here
        return f"CUDA not usable: {exc}"
    return ""


REASON = _gpu_reason()
needs_gpu = pytest.mark.skipif(bool(REASON), reason=REASON or "TensorRT available")


@pytest.mark.skipif(not REASON.startswith("tensorrt"), reason="tensorrt is installed")
def test_clear_error_without_tensorrt(lite0):
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        create_head_runner("tensorrt", lite0, CUT)


@pytest.fixture(scope="module")
def images(lite0, samples_dir):
    from edgecloud.datasets import ImageFolder

    ds = ImageFolder(samples_dir, lite0.preprocessing)
    return ds


@pytest.fixture(scope="module")
def calibration(lite0, images, tmp_path_factory):
    from edgecloud.quantize import calibrate

    return calibrate(lite0, CUT, images, num_images=64, out_dir=tmp_path_factory.mktemp("cal"))


def _batch(images, start: int, n: int) -> np.ndarray:
    return torch.stack([images[i][0] for i in range(start, start + n)]).numpy()


def _cosine(a, b) -> float:
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.tensorrt
@needs_gpu
def test_fp32_engine_matches_torch(lite0, images, tmp_path):
    batch = _batch(images, 100, 4)
    ref = create_head_runner("torch", lite0, CUT).run(batch)
    runner = create_head_runner(
        "tensorrt", lite0, CUT, engine_dir=tmp_path, max_batch=4, opt_batch=2
    )
    try:
        for n in (1, 3, 4):
            out = runner.run(batch[:n])
            np.testing.assert_allclose(out, ref[:n], atol=2e-2, rtol=1e-2)
        info = runner.describe()
        assert info["backend"] == "tensorrt" and info["precision"] == "fp32"
        assert info["engine_built"] and info["profile"] == [1, 2, 4]
    finally:
        runner.close()
    # Same key: the cached engine is loaded, not rebuilt.
    again = create_head_runner(
        "tensorrt", lite0, CUT, engine_dir=tmp_path, max_batch=4, opt_batch=2
    )
    try:
        assert not again.describe()["engine_built"]
        np.testing.assert_allclose(again.run(batch), ref, atol=2e-2, rtol=1e-2)
    finally:
        again.close()


@pytest.mark.tensorrt
@needs_gpu
@pytest.mark.parametrize("implicit", [False, True], ids=["explicit-qdq", "implicit-cache"])
def test_int8_engine_close_to_fp32_and_onnxruntime(lite0, images, calibration, implicit, tmp_path):
    batch = _batch(images, 200, 8)
    ref = create_head_runner("torch", lite0, CUT).run(batch)
    ort = create_head_runner(
        "onnxruntime",
        lite0,
        CUT,
        int8=True,
        calibration=calibration.directory,
        int8_graph="tensorrt",
    ).run(batch)
    runner = create_head_runner(
        "tensorrt",
        lite0,
        CUT,
        int8=True,
        calibration=calibration.directory,
        implicit_int8=implicit,
        engine_dir=tmp_path,
    )
    try:
        out = runner.run(batch)
        assert runner.describe()["precision"] == ("int8-implicit" if implicit else "int8")
    finally:
        runner.close()
    assert out.shape == ref.shape
    assert _cosine(out, ref) > 0.98
    if not implicit:  # the same QDQ graph in both runtimes
        assert _cosine(out, ort) > 0.99


@pytest.mark.tensorrt
@needs_gpu
def test_engine_with_a_learned_encoder_matches_onnxruntime(lite0, images, samples_dir, tmp_path):
    """Head + a learned codec's encoder as one engine: latents as ONNX Runtime's of the same
    graph; implicit INT8 (no scales for the encoder) is refused."""
    from edgecloud.cli import main
    from edgecloud.codec import load_calibration_file

    argv = ["train-codec", "--cut", CUT, "--name", "tiny", "--steps", "4", "--train-images", "8",
            "--views", "1", "--latent", "4", "--batch-size", "4", "--data", str(samples_dir),
            "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    codec = load_calibration_file(tmp_path / "tiny.npz")
    batch = _batch(images, 100, 4)
    ref = create_head_runner("onnxruntime", lite0, CUT, encoder=codec).run(batch)
    runner = create_head_runner("tensorrt", lite0, CUT, engine_dir=tmp_path, encoder=codec)
    try:
        out = runner.run(batch)
        assert runner.describe()["encoder"] == "learned-tiny"
    finally:
        runner.close()
    assert out.shape == ref.shape == (4, *codec.config.latent_shape)
    assert _cosine(out, ref) > 0.999
    with pytest.raises(BackendUnavailableError, match="explicit"):
        create_head_runner(
            "tensorrt",
            lite0,
            CUT,
            int8=True,
            implicit_int8=True,
            encoder=codec,
            engine_dir=tmp_path,
        )


@pytest.mark.tensorrt
@needs_gpu
def test_runner_works_from_another_thread(lite0, images, tmp_path):
    import threading

    batch = _batch(images, 300, 2)
    runner = create_head_runner("tensorrt", lite0, CUT, engine_dir=tmp_path)
    results = {}
    thread = threading.Thread(target=lambda: results.update(out=runner.run(batch)))
    thread.start()
    thread.join()
    try:
        np.testing.assert_allclose(results["out"], runner.run(batch), atol=1e-5)
    finally:
        runner.close()


@pytest.mark.tensorrt
@needs_gpu
def test_bad_device_and_oversized_batch(lite0, tmp_path):
    from edgecloud.errors import HeadInputError

    with pytest.raises(BackendUnavailableError, match="device"):
        create_head_runner("tensorrt", lite0, CUT, device="tpu:0", engine_dir=tmp_path)
    runner = create_head_runner("tensorrt", lite0, CUT, max_batch=2, engine_dir=tmp_path)
    try:
        with pytest.raises(HeadInputError, match="maximum batch"):
            runner.run(np.zeros((3, 3, 224, 224), np.float32))
    finally:
        runner.close()


@pytest.mark.skipif(not REASON.startswith("tensorrt"), reason="tensorrt is installed")
def test_build_command_reports_missing_tensorrt(capsys):
    from edgecloud.cli import main

    assert main(["build", "--cut", CUT, "--runs", "0"]) == 1
    assert "TensorRT is not installed" in capsys.readouterr().err
