"""Rate–accuracy sweep on real images with the real EfficientNet-Lite0 (32 images)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from edgecloud.cli import main
from edgecloud.codec import CodecCalibration, FeatureCodec, decode_bitstream
from edgecloud.errors import CodecSpecError, DatasetError
from edgecloud.experiments.plots import codec_family
from edgecloud.experiments.sweep import Sweep, SweepData, expand_codecs

CUT = "blocks.3"


@pytest.fixture(scope="module")
def sweep_rows(lite0, samples_dir, tmp_path_factory):
    data = SweepData.split(str(samples_dir), lite0, limit=32, calib_images=16)
    sweep = Sweep(
        lite0,
        data,
        [CUT],
        ["raw", "q8-ncc-zstd", "q4-ncc-zstd", "q2-ncc-zstd", "q3-ccd-rans", "jpeg-input-q90"],
        batch_size=16,
        workers=0,
        calibration_dir=tmp_path_factory.mktemp("cal"),
    )
    return {row["codec_canonical"]: row for row in sweep.rows()}, data, sweep


def test_calibration_and_evaluation_images_are_disjoint(sweep_rows):
    _, data, _ = sweep_rows
    ev = {p.name for p in data.evaluation.files}
    cal = {p.name for p in data.calibration.files}
    assert len(ev) == 32 and len(cal) == 16 and not ev & cal
    assert max(ev) < min(cal)  # calibration comes from the end of the sorted list


def test_8bit_accuracy_matches_the_uncompressed_model(sweep_rows):
    rows, _, _ = sweep_rows
    for codec in ("raw", "q8-ncc-zstd-msg-pt"):
        row = rows[codec]
        assert row["images"] == 32
        assert row["top1"] == row["ref_top1"] and row["fidelity"] == 1.0
    assert rows["raw"]["bits_per_element"] == pytest.approx(32.0, rel=0.01)
    assert rows["raw"]["ref_top1"] > 0.7  # real weights on real images


def test_bytes_fall_as_bits_fall(sweep_rows):
    rows, _, _ = sweep_rows
    sizes = [rows[f"q{b}-ncc-zstd-msg-pt"]["bytes_per_image"] for b in (8, 4, 2)]
    assert sizes[0] > sizes[1] > sizes[2]
    assert rows["raw"]["bytes_per_image"] > sizes[0]
    assert rows["q3-ccd-rans-mse-pc"]["bits_per_element"] < 3.0


def test_rows_have_the_flat_keys_and_the_baseline(sweep_rows):
    rows, _, _ = sweep_rows
    jpeg = rows["jpeg-input-q90"]
    assert jpeg["cut"] == "input" and jpeg["elements"] == 3 * 224 * 224
    assert 3000 < jpeg["bytes_per_image"] < 60000
    for row in rows.values():
        for key in ("top1", "top5", "fidelity", "ref_top1", "bytes_per_image", "encode_ms"):
            assert np.isfinite(row[key])


def test_rows_carry_intervals_and_mcnemar(sweep_rows):
    rows, _, sweep = sweep_rows
    for row in rows.values():
        for key in ("top1", "top5", "top1_drop", "fidelity"):
            assert row[f"{key}_lo"] <= row[key] <= row[f"{key}_hi"], (row["codec"], key)
        assert 0.0 < row["mcnemar_p"] <= 1.0
    raw = rows["raw"]  # lossless: no discordant images, a zero-width drop interval
    assert raw["mcnemar_p"] == 1.0 and raw["top1_drop_lo"] == raw["top1_drop_hi"] == 0.0
    assert raw["top1_hi"] - raw["top1_lo"] > 0.1  # 32 images: wide
    # an unlabelled folder: accuracies and their intervals NaN, fidelity still measured
    n = 8
    preds, ref = np.arange(n), {"pred": np.arange(n), "labels": np.full(n, -1)}
    row = sweep._row("blocks.3", "raw", "raw", 32, preds, np.zeros(n, bool), ref, 800, 100,
                     0.0, 0.0, 1.0, 1.0, "")  # fmt: skip
    assert np.isnan([row[k] for k in ("top1", "top1_lo", "top1_drop_hi", "mcnemar_p")]).all()
    assert row["fidelity"] == row["fidelity_lo"] == row["fidelity_hi"] == 1.0


def test_sweep_saves_calibrations_that_decode_its_streams(sweep_rows, lite0):
    rows, _, sweep = sweep_rows
    cal_id = rows["q3-ccd-rans-mse-pc"]["calibration"]
    cal = CodecCalibration.load(sweep.calibration_dir / f"{cal_id}.npz")
    assert cal.meta["cut"] == CUT and cal.meta["calibration_images"] == 16
    feature = np.random.default_rng(0).standard_normal((80, 14, 14)).astype(np.float32)
    data = FeatureCodec.from_spec("q3-ccd-rans", cal).encode(feature)
    assert decode_bitstream(data, {cal.id: cal}).shape == feature.shape


def test_expand_codecs_substitutes_bit_depths():
    assert expand_codecs(["q8-ccd-rans", "raw", "q4-ccd-rans"], [2, 4]) == [
        "q2-ccd-rans",
        "q4-ccd-rans",
        "raw",
    ]
    assert codec_family("q3-ccd-rans-mse-pc") == "qB-ccd-rans-mse-pc"
    assert codec_family("q4-ncc-crans-s2.5-pt") == "qB-ncc-crans-sX-pt"
    assert codec_family("q4-ncc-crans-rd0.7-pc") == "qB-ncc-crans-rdX-pc"
    assert codec_family("learned-lite0_b3") == "learned"
    assert codec_family("q8-ct-av1-crf53-medium-msg-pt") == "qB-ct-av1-crfX-medium-msg-pt"
    assert codec_family("q8-ct-h264-qp40-medium-msg-pt") == "qB-ct-h264-qpX-medium-msg-pt"
    with pytest.raises(CodecSpecError):
        expand_codecs(["q8-ncc-zip"], None)


def test_split_refuses_to_leave_no_evaluation_images(lite0, samples_dir):
    with pytest.raises(DatasetError, match="calib-images"):
        SweepData.split(str(samples_dir), lite0, limit=None, calib_images=800)
    with pytest.raises(DatasetError, match="--offset 736"):
        SweepData.split(str(samples_dir), lite0, limit=None, calib_images=64, offset=736)


def test_split_offset_evaluates_held_out_images(lite0, samples_dir):
    files = sorted(SweepData.split(str(samples_dir), lite0, None, 0).evaluation.files)
    data = SweepData.split(str(samples_dir), lite0, limit=10, calib_images=64, offset=400)
    assert data.evaluation.files == files[400:410]
    assert data.calibration.files == files[-64:]
    tail = SweepData.split(str(samples_dir), lite0, limit=None, calib_images=64, offset=700)
    assert tail.evaluation.files == files[700:-64]  # up to the calibration images, not into them


def test_cli_writes_csv_json_plot_and_resumes(samples_dir, tmp_path, capsys):
    csv_path, json_path, plot = tmp_path / "s.csv", tmp_path / "s.json", tmp_path / "s.png"
    argv = ["sweep", "--data", str(samples_dir), "--cut", "blocks.5", "--codec", "q8-ncc-lz4"]
    argv += ["--bits", "8,3", "--limit", "8", "--calib-images", "0", "--data-workers", "0"]
    argv += ["--csv", str(csv_path), "--no-progress"]
    md = tmp_path / "s.md"
    assert main(argv + ["--json", str(json_path), "--plot", str(plot), "--markdown", str(md)]) == 0
    captured = capsys.readouterr()
    assert "evaluation: 8 images" in captured.out and "q3-ncc-lz4" in captured.out
    assert "e+0" not in captured.out and "KB/image" in captured.out  # human units
    with csv_path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["codec"] for r in rows] == ["q8-ncc-lz4", "q3-ncc-lz4"]  # as typed ...
    assert [r["codec_canonical"] for r in rows] == ["q8-ncc-lz4-msg-pt", "q3-ncc-lz4-msg-pt"]
    assert len(json.loads(json_path.read_text())["rows"]) == 2
    assert plot.stat().st_size > 10_000
    assert (tmp_path / "s-fidelity.png").stat().st_size > 10_000
    assert "fidelity plot:" in captured.out
    assert md.read_text().count("| blocks.5 | `q") == 2
    assert "McNemar p" in md.read_text() and md.read_text().count(" [") == 6  # 3 per row
    # an older CSV without the interval columns resumes (rewritten under the new header)
    old_columns = [c for c in rows[0] if not c.endswith(("_lo", "_hi")) and c != "mcnemar_p"]
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, old_columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    # the old spellings still work, with a warning naming the new one
    old = ["sweep", "--data", str(samples_dir), "--cuts", "blocks.5", "--limit", "8"]
    old += ["--calib-images", "0", "--workers", "0", "--csv", str(csv_path), "--no-progress"]
    assert main(old + ["--resume", "--codecs", "q8-ncc-lz4,f16-lz4", "--bits", "8,3"]) == 0
    captured = capsys.readouterr()
    assert "resuming: 2 rows" in captured.out
    assert "--cuts is deprecated" in captured.err and "use --cut" in captured.err
    with csv_path.open() as fh:
        resumed = list(csv.DictReader(fh))
    assert len(resumed) == 3 and list(resumed[0]) == list(rows[0])
    assert resumed[0]["top1_lo"] == "" and resumed[2]["codec"] == "f16-lz4"
    assert float(resumed[2]["top1_lo"]) <= float(resumed[2]["top1"])
    assert main(argv[:-1] + ["--cut", "nope"]) == 1
    assert "nope" in capsys.readouterr().err
