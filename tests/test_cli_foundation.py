"""The foundation commands as a user runs them."""

from __future__ import annotations

import json

from edgecloud.cli import main


def test_profile_lists_at_least_ten_cuts_with_all_columns(tmp_path, capsys):
    out = tmp_path / "profile.json"
    assert main(["profile", "efficientnet_lite0", "--repeat", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for column in (
        "cut",
        "shape",
        "elements",
        "KB fp32",
        "KB int8",
        "head MACs",
        "tail MACs",
        "head params",
        "tail params",
        "head ms (median)",
        "tail ms (median)",
    ):
        assert column in printed
    assert "blocks.3" in printed and "80x14x14" in printed and "15,680" in printed
    data = json.loads(out.read_text())
    assert data["model"] == "efficientnet_lite0"
    assert len(data["cuts"]) >= 10
    assert {
        "cut",
        "shape",
        "elements",
        "bytes_fp32",
        "bytes_int8",
        "head_macs",
        "tail_macs",
        "head_params",
        "tail_params",
        "head_ms",
        "tail_ms",
    } <= set(data["cuts"][0])
    assert data["model_ms"] > 0


def test_eval_split_matches_full_model(tmp_path, samples_dir):
    full, cut = tmp_path / "full.json", tmp_path / "cut.json"
    common = ["--data", str(samples_dir), "--limit", "32", "--data-workers", "0"]
    assert main(["eval", *common, "--json", str(full)]) == 0
    assert main(["eval", *common, "--cut", "blocks.3", "--json", str(cut)]) == 0
    full_result, cut_result = json.loads(full.read_text()), json.loads(cut.read_text())
    assert full_result["images"] == cut_result["images"] == 32
    assert full_result["top1"] == cut_result["top1"]


def test_eval_offset_evaluates_the_images_after_it(tmp_path, samples_dir, capsys):
    out = tmp_path / "tail.json"
    argv = ["eval", "--data", str(samples_dir), "--offset", "796", "--limit", "8"]
    assert main([*argv, "--data-workers", "0", "--no-progress", "--json", str(out)]) == 0
    images = sorted(p.name for p in (samples_dir / "images").glob("*.jpg"))
    assert f"on 4 images from {images[796]}" in capsys.readouterr().out  # the last 4 of 800
    result = json.loads(out.read_text())
    assert result["images"] == 4 and result["offset"] == 796


def test_errors_are_one_line_and_nonzero(capsys):
    assert main(["eval", "--model", "nope"]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["cuts", "efficientnet_lite0", "--weights", "/no/such/file.pth"]) == 1
    assert "weights file not found" in capsys.readouterr().err


def test_profile_times_the_head_in_the_edge_runtime(tmp_path, capsys):
    """--backend onnxruntime: the head is timed in ONNX Runtime (what the planner should read
    for an edge that runs it), the tail in torch; the JSON says which."""
    out = tmp_path / "profile.json"
    argv = ["profile", "--cut", "blocks.3", "--repeat", "3", "--no-progress"]
    assert main([*argv, "--backend", "onnxruntime", "--json", str(out)]) == 0
    assert "heads: onnxruntime fp32, tails and whole model: torch fp32" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["head_backend"] == "onnxruntime fp32" and data["cuts"][0]["head_ms"] > 0
