"""The CLI as a new user meets it: one vocabulary, bad input without tracebacks, a fail-fast
edge, warm first frames."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest

from edgecloud.cli import build_parser, main
from edgecloud.cli.options import DEPRECATED, VOCABULARY, deprecated_replacement, options_of
from edgecloud.cloud.process import cli_command
from edgecloud.models.record import all_records

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _commands() -> Dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_of_every_command_has_one_meaning():
    dests: Dict[str, set] = {}
    for command, parser in _commands().items():
        for option, action in options_of(parser).items():
            new = deprecated_replacement(action)
            if new is not None:  # a deprecated spelling: hidden, names its replacement
                assert action.help == argparse.SUPPRESS, (command, option)
                assert option in DEPRECATED and new in VOCABULARY, (command, option)
                replacement = options_of(parser)[new]
                assert action.dest == replacement.dest, (command, option)
                continue
            assert option in VOCABULARY, f"`{command} {option}` is not in the vocabulary"
            dests.setdefault(option, set()).add(action.dest)
        for flag in ("-v", "-q", "--verbose", "--quiet"):  # also after the command name
            assert flag in parser._option_string_actions, (command, flag)
    # the same name is the same argument everywhere (cuts/codecs: one or several)
    for option, seen in dests.items():
        assert len(seen - {"cuts", "codecs"} if option in ("--cut", "--codec") else seen) <= 1, (
            option,
            seen,
        )
    documented = DOCS.read_text()
    for option in [*VOCABULARY, *DEPRECATED]:
        assert f"`{option}" in documented, f"{option} is not in docs/cli.md"


def test_same_concepts_use_the_same_names():
    commands = _commands()
    data_commands = {"eval", "sweep", "calibrate", "edge", "demo"}
    for name in data_commands:
        assert "--data" in options_of(commands[name])
        assert "--images" not in VOCABULARY and "--source" not in VOCABULARY
    for name in ("eval", "edge", "build"):
        assert "--int8-calibration" in options_of(commands[name])
    for name in ("eval", "sweep", "calibrate"):
        assert "--data-workers" in options_of(commands[name])
    for name in ("cuts", "profile"):  # the model as an option too, not only positionally
        assert "--model" in options_of(commands[name])


def test_version_and_verbosity_anywhere(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("edgecloud ")
    assert main(["models", "-q"]) == 0
    assert main(["-v", "models"]) == 0


MALFORMED = [
    (["eval", "--limit", "x"], "--limit"),
    (["eval", "--limit", "0"], "--limit"),
    (["eval", "--offset", "-1"], "--offset"),
    (["eval", "--batch-size", "-3"], "--batch-size"),
    (["sweep", "--bits", "4,x"], "--bits"),
    (["sweep", "--bits", "4,40"], "--bits"),
    (["sweep", "--cut", "a,,b"], "--cut"),
    (["calibrate", "--method", "best"], "--method"),
    (["calibrate", "--percentile", "-1"], "--percentile"),
    (["edge", "--connect", "localhost:5555", "--data", "x"], "--connect"),
    (["edge", "--window", "0", "--data", "x"], "--window"),
    (["serve", "--max-batch-size", "0"], "--max-batch-size"),
    (["serve", "--rate-per-client", "-1"], "--rate-per-client"),
    (["serve", "--rate-burst", "0"], "--rate-burst"),
    (["demo", "--jpeg-quality", "500"], "--jpeg-quality"),
    (["profile", "--repeat", "many"], "--repeat"),
    (["build", "--max-batch", "0"], "--max-batch"),
    (["eval", "--on-bad-image", "ignore"], "--on-bad-image"),
]


@pytest.mark.parametrize("argv,option", MALFORMED, ids=[" ".join(a) for a, _ in MALFORMED])
def test_malformed_options_stop_at_parse_time_naming_the_option(argv, option, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and option in err and "Traceback" not in err


BAD_VALUES = [
    (["eval", "--model", "nope"], "unknown model 'nope'"),
    (["cuts", "--weights", "/no/such/file.pth"], "weights file not found"),
    (["eval", "--cut", "nope", "--limit", "1"], "no cut point 'nope'"),
    (["eval", "--data", "/no/such/folder"], "not found"),
    (["eval", "--offset", "800"], "no images left"),
    (["sweep", "--video", "bikes", "--offset", "3"], "not with --video"),
    (["sweep", "--codec", "q4-zzz-zstd", "--limit", "1"], "repack 'zzz'"),
    (["cuts", "resnet18", "--model", "vgg16"], "disagree"),
    (["serve", "--config", "/no/such.toml"], "not found"),
    (["sweep", "--resume"], "--resume needs --csv"),
    (["edge"], "--data is required"),
]


@pytest.mark.parametrize("argv,message", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_values_are_one_line_errors(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") <= 2


@pytest.fixture(scope="module")
def folder_with_a_corrupt_image(samples_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corrupt")
    images = sorted((samples_dir / "images").iterdir())[:5]
    for path in images:
        shutil.copy(path, folder / path.name)
    (folder / images[2].name).write_bytes(images[2].read_bytes()[:300])  # truncated JPEG
    return folder


def test_a_corrupt_image_is_skipped_and_counted_or_stops_cleanly(
    folder_with_a_corrupt_image, tmp_path, capsys
):
    folder = folder_with_a_corrupt_image
    out = tmp_path / "eval.json"
    assert main(["eval", "--data", str(folder), "--data-workers", "2", "--json", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    summary = json.loads(out.read_text())
    assert summary["images"] == 4 and summary["skipped_images"] == 1
    assert "1 unreadable, skipped" in captured.out and "Traceback" not in captured.err
    assert main(["eval", "--data", str(folder), "--on-bad-image", "stop", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "0003_" in err and "cannot decode" in err and "Traceback" not in err
    assert err.count("\n") <= 2
    csv_path = tmp_path / "s.csv"
    argv = ["sweep", "--data", str(folder), "--codec", "q8-ncc-zstd", "--calib-images", "0"]
    assert main(argv + ["--csv", str(csv_path), "--no-progress"]) == 0
    assert "1 unreadable, skipped" in capsys.readouterr().out


def test_edge_without_a_daemon_fails_fast_naming_the_endpoint(free_endpoint, samples_dir):
    start = time.monotonic()
    proc = subprocess.run(
        cli_command("edge", "--connect", free_endpoint, "--data",
         str(samples_dir), "--limit", "2", "--connect-timeout", "3"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    assert proc.returncode == 1 and elapsed < 10, (proc.returncode, elapsed)
    assert free_endpoint in proc.stderr and "edgecloud serve" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.fixture(scope="module")
def blocks_daemon():
    from edgecloud.cloud.process import DaemonProcess

    daemon = DaemonProcess(["--bind", "tcp://127.0.0.1:0", "--cut", "blocks", "--threads", "1",
                            "--stats-interval", "3600"])  # fmt: skip
    daemon.start()
    yield daemon
    daemon.stop(30)


def test_edge_stops_before_the_first_frame_at_a_cut_the_daemon_does_not_serve(
    blocks_daemon, samples_dir, capsys
):
    argv = ["edge", "--connect", blocks_daemon.endpoint, "--data", str(samples_dir)]
    assert main(argv + ["--cut", "blocks.3", "--limit", "3"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # not one frame sent
    assert "not at cut 'blocks.3'" in captured.err and "blocks" in captured.err


def test_first_frame_is_warm(blocks_daemon, samples_dir, tmp_path, capsys):
    records = tmp_path / "frames.jsonl"
    argv = ["edge", "--connect", blocks_daemon.endpoint, "--data", str(samples_dir)]
    assert main(argv + ["--limit", "11", "--window", "1", "--jsonl", str(records)]) == 0
    capsys.readouterr()
    frames: List[dict] = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(frames) == 11 and all(f["status"] == "ok" for f in frames)

    def latency(frame: dict) -> float:  # the whole edge path and the round trip
        return sum(frame[k] for k in ("preprocess_ms", "head_ms", "encode_ms", "rtt_ms"))

    # a cold first frame pays for lazy set-up (many times a frame); a loaded CPU slows them all
    slowest_warm = max(latency(f) for f in frames[1:])
    assert latency(frames[0]) <= 2 * slowest_warm, [round(latency(f), 1) for f in frames]


def test_every_default_and_served_cut_has_its_codec_calibrated():
    from edgecloud.codec import parse_spec
    from edgecloud.presets import expected_presets

    for record in all_records():
        for cut in {record.default_cut, *record.serve_cuts()} - {None}:
            codec = record.codec_for(cut)
            if parse_spec(codec).needs_calibration:
                assert (record.name, cut, codec) in expected_presets(), (record.name, cut, codec)
