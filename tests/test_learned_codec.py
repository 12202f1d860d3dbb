"""Learned bottleneck codecs: training by distillation, the artifact, the bitstream."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgecloud.cli import main
from edgecloud.codec import (
    BitstreamError,
    FeatureCodec,
    LearnedCodec,
    decode_bitstream,
    load_calibration_file,
    load_calibrations,
    parse_spec,
)
from edgecloud.errors import CalibrationError, CodecSpecError, DatasetError
from edgecloud.experiments.sweep import Sweep, SweepData
from edgecloud.partition import split


@pytest.fixture(scope="module")
def trained(tmp_path_factory, samples_dir):
    """A tiny codec trained for a few steps through the CLI on the last 8 shared images."""
    out = tmp_path_factory.mktemp("codecs")
    code = main(
        ["train-codec", "--cut", "blocks", "--name", "tiny", "--steps", "6", "--train-images",
         "8", "--views", "2", "--latent", "4", "--batch-size", "4", "--data", str(samples_dir),
         "--out", str(out), "--no-progress", "--json", str(out / "summary.json")]
    )  # fmt: skip
    assert code == 0
    return out


def test_training_writes_artifact_log_and_plot(trained):
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["codec"] == "learned-tiny" and summary["cut"] == "blocks"
    log = json.loads((trained / "tiny.log.json").read_text())
    assert [r["step"] for r in log] == [0, 5] and all(r["bits_per_element"] > 0 for r in log)
    assert (trained / "tiny-training.png").stat().st_size > 0
    assert not (trained / "tiny.checkpoint.pt").exists()
    codec = load_calibration_file(trained / "tiny.npz")
    assert isinstance(codec, LearnedCodec) and codec.hash == summary["sha256"]
    assert len(codec.meta["train_files"]) == 8 and codec.meta["cut"] == "blocks"


def test_round_trip_matches_the_module_on_real_features(trained, lite0, sample_images):
    codec = load_calibration_file(trained / "tiny.npz")
    head, _ = split(lite0, "blocks")
    with torch.inference_mode():
        feats = head(sample_images(4)).numpy()
        expected = codec.module(torch.from_numpy(feats))[0].numpy()
    fc = FeatureCodec(parse_spec("learned-tiny"), codec)
    out = decode_bitstream(fc.encode(feats), {codec.id: codec})
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    one = decode_bitstream(fc.encode(feats[0]), {codec.id: codec})  # (C, H, W) works too
    assert one.shape == feats[0].shape
    np.testing.assert_allclose(one, expected[0], rtol=1e-4, atol=1e-4)
    # the daemon's way: every .npz of a folder, calibrations and learned codecs alike
    assert "tiny" in load_calibrations(trained)


def test_bad_artifacts_are_refused_with_clear_errors(trained, tmp_path):
    codec = load_calibration_file(trained / "tiny.npz")
    state = dict(codec.state)
    key = next(k for k in state if k.startswith("decoder") and k.endswith("weight"))
    tampered = LearnedCodec("tiny", codec.config, {**state, key: state[key] + 1}, codec.meta)
    path = tampered.save(tmp_path)
    raw = dict(np.load(path, allow_pickle=False))
    header = json.loads(str(raw["header"]))
    header["hash"] = codec.hash  # claims the original's hash
    raw["header"] = np.asarray(json.dumps(header))
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **raw)
    with pytest.raises(CalibrationError, match="hash mismatch"):
        load_calibration_file(path)
    wrong = LearnedCodec("wrong", codec.config.__class__(**{**codec.config.__dict__, "latent": 5}),
                         state, codec.meta)  # fmt: skip
    with pytest.raises(CalibrationError, match="do not fit its configuration"):
        LearnedCodec.load(wrong.save(tmp_path))
    with pytest.raises(CodecSpecError):
        parse_spec("learned-Bad-Name")


def test_bad_bitstreams_and_shapes(trained, lite0, sample_images):
    codec = load_calibration_file(trained / "tiny.npz")
    fc = FeatureCodec(parse_spec("learned-tiny"), codec)
    with pytest.raises(CalibrationError, match="320 channels"):
        fc.encode(np.zeros((1, 80, 14, 14), np.float32))
    head, _ = split(lite0, "blocks")
    with torch.inference_mode():
        data = fc.encode(head(sample_images(1)).numpy())
    with pytest.raises(BitstreamError, match="not provided"):
        decode_bitstream(data)
    for cut in (len(data) - 5, 40):
        with pytest.raises(BitstreamError):
            decode_bitstream(data[:cut], {codec.id: codec})
    with pytest.raises(CalibrationError, match="cannot use"):
        FeatureCodec(parse_spec("q4-ncc-crans-s2.5-pt"), codec)


def test_sweep_rows_for_learned_codecs_and_refused_overlap(trained, lite0, samples_dir):
    codec = load_calibration_file(trained / "tiny.npz")
    data = SweepData.split(str(samples_dir), lite0, 16, 0)
    sweep = Sweep(lite0, data, ["blocks"], ["learned-tiny"], learned={"tiny": codec}, workers=0)
    (row,) = list(sweep.rows())
    assert row["codec_canonical"] == "learned-tiny" and row["calibration"] == "tiny"
    assert row["calib_images"] == 8
    assert row["bits_per_element"] > 0 and row["fidelity_lo"] <= row["fidelity"]
    everything = SweepData.split(str(samples_dir), lite0, None, 0)  # includes its 8 images
    sweep = Sweep(lite0, everything, ["blocks"], ["learned-tiny"], learned={"tiny": codec})
    with pytest.raises(DatasetError, match="trained on 8 of the evaluation images"):
        list(sweep.rows())
    with pytest.raises(DatasetError, match="--codec-calibration tiny.npz"):
        list(Sweep(lite0, data, ["blocks"], ["learned-tiny"], workers=0).rows())


def test_daemon_serves_a_learned_codec_to_an_edge(
    trained, lite0, samples_dir, start_daemon, tmp_path
):
    """`edgecloud serve --codec-calibration NAME.npz` in a child process; the edge encodes with
    the same artifact; answers equal the local head -> codec -> tail path."""
    from edgecloud.edge import EdgeClient, iter_frames

    path = trained / "tiny.npz"
    daemon = start_daemon("--cut", "blocks", "--codec-calibration", str(path))
    codec = load_calibration_file(path)
    frames = list(iter_frames(str(samples_dir), limit=3))
    with EdgeClient(
        daemon.endpoint, spec=lite0, cut="blocks", codec="learned-tiny", calibration=codec
    ) as edge:
        results = list(edge.stream(frames))
    head, tail = split(lite0, "blocks")
    fc = FeatureCodec(parse_spec("learned-tiny"), codec)
    for (_, image), result in zip(frames, results):
        with torch.inference_mode():
            feature = head(lite0.preprocessing(image)[None]).numpy()
            local = tail(torch.from_numpy(fc.decode(fc.encode(feature)))).argmax(1).item()
        assert result.indices[0] == local and result.bytes_sent < 4000
    # `edgecloud edge --backend onnxruntime`: head and encoder as one ONNX Runtime graph
    jsonl = tmp_path / "edge.jsonl"
    argv = ["edge", "--connect", daemon.endpoint, "--data", str(samples_dir), "--limit", "3",
            "--backend", "onnxruntime", "--codec", "learned-tiny", "--codec-calibration",
            str(path), "--jsonl", str(jsonl)]  # fmt: skip
    assert main(argv) == 0
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["indices"][0] for r in lines] == [r.indices[0] for r in results]


def test_head_runners_run_the_encoder_in_the_head_graph(
    trained, lite0, sample_images, int8_calibrations
):
    """The edge side as one graph (fp32 and INT8 heads in ONNX Runtime, torch): the runners
    return latents whose bitstream decodes like the torch path's (fp32) or like the INT8
    head's feature through the torch encoder (INT8)."""
    from edgecloud.backends import create_head_runner

    codec = load_calibration_file(trained / "tiny.npz")
    fc = FeatureCodec(parse_spec("learned-tiny"), codec)
    images = sample_images(3).numpy()
    reference = fc.decode(fc.encode(create_head_runner("torch", lite0, "blocks").run(images)))
    for backend in ("torch", "onnxruntime"):
        with create_head_runner(backend, lite0, "blocks", encoder=codec) as runner:
            latents = runner.run(images)
            assert runner.describe()["encoder"] == "learned-tiny"
        assert latents.shape == (3, *codec.config.latent_shape)
        stream = fc.encode_latents(latents)
        assert decode_bitstream(stream, {codec.id: codec}).shape == (3, 320, 7, 7)
        assert np.mean(np.isclose(fc.decode(stream), reference, atol=1e-3)) > 0.99
        one = fc.encode_latents(latents[0])  # one image: a (C, H, W) feature, as the edge sends
        assert fc.decode(one).shape == (320, 7, 7)
    art = int8_calibrations("blocks")
    int8 = create_head_runner("onnxruntime", lite0, "blocks", int8=True, calibration=art.directory)
    with create_head_runner(
        "onnxruntime", lite0, "blocks", int8=True, calibration=art.directory, encoder=codec
    ) as runner:
        latents = runner.run(images)
        assert runner.describe()["precision"] == "int8"
    expected = fc.decode(fc.encode(int8.run(images)))
    assert np.mean(np.isclose(fc.decode(fc.encode_latents(latents)), expected, atol=1e-3)) > 0.99


def test_an_encoder_for_another_cut_or_codec_is_refused(trained, lite0):
    from edgecloud.backends import create_head_runner
    from edgecloud.edge.client import Rung
    from edgecloud.errors import ConfigError

    codec = load_calibration_file(trained / "tiny.npz")
    with pytest.raises(CalibrationError, match=r"trained for efficientnet_lite0 at cut 'blocks'"):
        create_head_runner("onnxruntime", lite0, "blocks.3", encoder=codec)
    runner = create_head_runner("torch", lite0, "blocks", encoder=codec)
    with pytest.raises(ConfigError, match="needs --codec learned-tiny"):
        Rung("blocks", "q8-ncc-zstd", FeatureCodec.from_spec("q8-ncc-zstd"), runner)
    with pytest.raises(CodecSpecError, match="not a learned codec"):
        FeatureCodec.from_spec("q8-ncc-zstd").encode_latents(np.zeros((4, 7, 7), np.float32))


def test_build_takes_only_a_learned_codec_for_its_engine(capsys):
    from edgecloud.presets import PRESET_DIR

    preset = sorted(PRESET_DIR.glob("*.npz"))[0]
    assert main(["build", "--cut", "blocks", "--codec-calibration", str(preset)]) != 0
    assert "build takes a learned codec" in capsys.readouterr().err


def test_interrupted_training_resumes_from_its_checkpoint(lite0, samples_dir, tmp_path):
    from edgecloud.experiments.train_codec import TrainConfig, checkpoint_path, train_codec

    config = TrainConfig(name="resumed", cut="blocks", steps=210, batch_size=2, latent=4,
                         hidden=8, train_images=4, views=1)  # fmt: skip

    def stop_after_first_checkpoint(stage: str, done: int, total: int) -> None:
        if stage == "train" and done == 202:  # the checkpoint of step 200 is written
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_codec(lite0, str(samples_dir), config, tmp_path, stop_after_first_checkpoint)
    checkpoint = checkpoint_path(tmp_path, "resumed")
    assert checkpoint.is_file()
    args = ["train-codec", "--cut", "blocks", "--name", "resumed", "--data", str(samples_dir),
            "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    assert main(args) == 1  # refuses to overwrite the checkpoint without --resume
    result = train_codec(lite0, str(samples_dir), config, tmp_path, resume=True)
    steps = [r["step"] for r in result.log]
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == 209
    assert not checkpoint.exists() and (tmp_path / "resumed.npz").is_file()
    with pytest.raises(KeyboardInterrupt):
        train_codec(lite0, str(samples_dir), config, tmp_path, stop_after_first_checkpoint)
    other = TrainConfig(**{**config.__dict__, "lmbda": 1.0})
    with pytest.raises(DatasetError, match="other settings"):
        train_codec(lite0, str(samples_dir), other, tmp_path, resume=True)


def test_sweep_cli_refuses_a_missing_or_wrong_learned_codec_file_before_writing(
    trained, samples_dir, tmp_path, capsys
):
    csv_path = tmp_path / "rows.csv"
    base = ["sweep", "--codec", "learned-tiny", "--data", str(samples_dir), "--csv", str(csv_path)]
    assert main([*base, "--codec-calibration", str(tmp_path / "missing.npz")]) == 1
    assert "missing.npz does not exist" in capsys.readouterr().err
    assert not csv_path.exists()


def test_video_sweep_takes_learned_and_bit_allocated_codecs(trained, samples_dir, tmp_path, capsys):
    """`sweep --video` with a learned codec (its file) and an rdX codec (sensitivity through
    the tail on the still calibration images): frame rows for both, stream rows for rdX; a
    learned codec made for another cut is refused before the CSV is written."""
    csv_path, json_path = tmp_path / "v.csv", tmp_path / "v.json"
    argv = ["sweep", "--video", "bikes.mp4", "--limit", "4", "--calib-images", "8",
            "--data", str(samples_dir), "--codec", "learned-tiny,q4-ncc-crans-rd1.0",
            "--codec-calibration", str(trained / "tiny.npz"), "--keyframe-interval", "2",
            "--no-progress", "--csv", str(csv_path), "--json", str(json_path)]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads(json_path.read_text())["rows"]
    by = {(r["codec"], r["mode"]): r for r in rows}
    assert set(by) == {
        ("learned-tiny", "frame"),
        ("q4-ncc-crans-rd1.0", "frame"),
        ("q4-ncc-crans-rd1.0", "stream"),
    }
    for row in rows:
        assert row["frames"] == 4 and row["bits_per_element"] > 0
        assert row["fidelity_lo"] <= row["fidelity"] <= row["fidelity_hi"]
    other = tmp_path / "other.csv"
    assert main([*argv[:-4], "--cut", "blocks.3", "--csv", str(other)]) == 1
    assert "learned codec tiny was trained for" in capsys.readouterr().err
    assert not other.exists()
