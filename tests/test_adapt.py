"""The edge's rate controller (edgecloud.edge.adapt) on scripted link behaviour."""

from __future__ import annotations

import pytest

from edgecloud.edge.adapt import AdaptConfig, RateController
from edgecloud.errors import ConfigError

LADDER = ["q8-ncc-zstd", "q4-ncc-zstd", "q4-ncc-crans-s2.5-pt"]
SIZES = [13600, 4800, 1600]


def run(controller: RateController, frames: int, link_of) -> list:
    """Send ``frames`` frames, each answered at once after ``link_of(size)`` = (latency, time
    on the link); the rungs used."""
    used = []
    for _ in range(frames):
        rung, frame = controller.choose()
        used.append(rung)
        controller.observe(rung, frame, SIZES[rung], *link_of(SIZES[rung]))
    return used


def link(mbit_s: float, fixed_ms: float = 30.0):
    """A frame of ``size`` bytes on a link of ``mbit_s`` (no queue) after ``fixed_ms`` of head,
    encode and daemon work: (latency, link time)."""
    return lambda size: (fixed_ms + size * 8 / (mbit_s * 1000), size * 8 / (mbit_s * 1000))


def test_a_fast_link_keeps_the_best_rung():
    controller = RateController(LADDER, AdaptConfig(latency_ms=200))
    assert set(run(controller, 50, link(100))) == {0} and controller.switches == 0


def test_a_slow_link_steps_down_as_far_as_needed_at_once():
    controller = RateController(LADDER, AdaptConfig(latency_ms=100))
    used = run(controller, 20, link(0.5))  # q8: 248 ms, q4: 107 ms, crans: 56 ms
    assert used[:3] == [0, 0, 0]  # three answers over the target ...
    assert used[3:] == [2] * 17  # ... then straight to the rung that fits, and it stays
    assert controller.switches == 1


def test_steps_up_only_after_a_window_of_fast_answers():
    config = AdaptConfig(latency_ms=100, window=12)
    controller = RateController(LADDER, config)
    run(controller, 10, link(0.5))
    assert controller.rung == 2
    used = run(controller, 40, link(100))  # the link recovers
    assert used[:12] == [2] * 12  # held for a window
    assert used[12:24] == [1] * 12 and controller.rung == 0  # then one rung per window


def test_does_not_step_up_to_a_rung_the_link_cannot_carry():
    """At 1 Mbit/s q8 (139 ms) misses a 120 ms target and q4 (68 ms) meets it with room to
    spare, but q8 would spend 109 ms on the link: 139 ms projected is over 0.7 × 120, so the
    edge stays at q4 until the link is faster."""
    controller = RateController(LADDER, AdaptConfig(latency_ms=120))
    run(controller, 5, link(1))
    assert controller.rung == 1
    assert set(run(controller, 60, link(1))) == {1} and controller.switches == 1
    assert set(run(controller, 40, link(3))[12:]) == {0}  # at 3 Mbit/s q8 fits: 66 ms


def test_answers_to_frames_sent_before_a_switch_do_not_count():
    controller = RateController(LADDER, AdaptConfig(latency_ms=100, react=1))
    early = [controller.choose() for _ in range(4)]  # four frames in flight at rung 0
    rung, frame = early[0]
    controller.observe(rung, frame, SIZES[0], 400.0, 370.0)
    assert controller.rung == 2
    for rung, frame in early[1:]:  # their slow answers arrive after the switch
        controller.observe(rung, frame, SIZES[0], 400.0, 370.0)
    assert controller.rung == 2 and controller.switches == 1


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="ladder is empty"):
        RateController([], AdaptConfig(latency_ms=100))
    with pytest.raises(ConfigError, match="latency_ms > 0"):
        AdaptConfig(latency_ms=0).validate()
    with pytest.raises(ConfigError, match="headroom"):
        AdaptConfig(latency_ms=10, headroom=1.5).validate()


def test_the_edge_switches_codecs_per_frame_against_a_real_daemon(start_daemon, lite0, samples_dir):
    """A target no link meets: the edge steps down to the last rung; every frame is answered
    and records the codec it was sent with, which the daemon decoded."""
    from edgecloud.edge import EdgeClient

    daemon = start_daemon("--cut", "blocks", "--decode-workers", "0")
    paths = sorted((samples_dir / "images").iterdir())[:12]
    with EdgeClient(
        daemon.endpoint, spec=lite0, cut="blocks", window=1, adapt=AdaptConfig(latency_ms=1.0)
    ) as edge:
        assert [(r.cut, r.spec) for r in edge.rungs] == [("blocks", c) for c in LADDER]
        edge.connect()
        results = [edge.predict(path) for path in paths]
    codecs = [r.codec for r in results]
    assert codecs[:3] == [LADDER[0]] * 3 and codecs[3:] == [LADDER[2]] * 9
    assert results[0].bytes_sent > 5 * results[-1].bytes_sent
    assert all(r.to_dict()["codec"] == r.codec for r in results)


def test_edge_cli_adapts_and_summarises_frames_per_codec(
    start_daemon, samples_dir, tmp_path, capsys
):
    import json

    from edgecloud.cli import main

    daemon = start_daemon("--cut", "blocks", "--decode-workers", "0")
    argv = ["edge", "--connect", daemon.endpoint, "--data", str(samples_dir), "--limit", "8"]
    summary = tmp_path / "summary.json"
    assert main([*argv, "--adapt", "1", "--window", "1", "--json", str(summary)]) == 0
    frames_per_codec = json.loads(summary.read_text())["frames_per_codec"]
    assert set(frames_per_codec) == {f"blocks:{LADDER[0]}", f"blocks:{LADDER[2]}"}
    # three answers over the target, plus the frame chosen while the third was in flight
    assert frames_per_codec[f"blocks:{LADDER[0]}"] in (3, 4) and sum(frames_per_codec.values()) == 8
    capsys.readouterr()
    assert main([*argv, "--codec", "q8-ncc-zstd,q4-ncc-zstd"]) == 1
    assert "a ladder (several codecs, CUT:CODEC) needs --adapt" in capsys.readouterr().err


def test_an_adaptive_edge_lowers_its_rate_when_a_shaped_link_drops(lite0, samples_dir, tmp_path):
    """Daemon and edge in a network namespace whose loopback is shaped to 10 Mbit/s, then to
    1 Mbit/s after 25 frames: the edge moves to smaller codecs and loses no frame."""
    import json

    from edgecloud.experiments.adapt_run import StepRun, reference_top1, run_step
    from edgecloud.experiments.shaped_link import unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no shaped link here: {reason}")
    run = StepRun(str(samples_dir), frames=60, fps=10, step_after=25, adapt_ms=150.0)
    result = run_step(run, tmp_path, reference_top1(lite0, str(samples_dir), run.frames))
    assert result["edge_exit_code"] == 0 and result["lost"] == 0, result
    before, after = result["before"], result["after"]
    # 10 Mbit/s carries 8-bit features (a CPU stall on a busy machine may step down briefly)
    assert before["codecs"].get(LADDER[0], 0) >= 0.8 * sum(before["codecs"].values()), result
    frames = [json.loads(line) for line in (tmp_path / "frames.jsonl").read_text().splitlines()]
    later = frames[result["step_after_frames"] + 10 :]  # after the frames in flight at the step
    assert later and LADDER[0] not in {f["codec"] for f in later}, result  # 1 Mbit/s: fewer bytes
    assert after["bytes_per_frame"] < before["bytes_per_frame"], result


def test_the_ladder_may_switch_the_cut(start_daemon, lite0, samples_dir):
    """Rungs at two cuts the daemon serves: the edge runs the head up to the rung's cut and
    says so in each result; the daemon runs the matching tail."""
    from edgecloud.edge import EdgeClient

    daemon = start_daemon("--decode-workers", "0")  # serves blocks and blocks.3
    ladder = ["blocks:q8-ncc-zstd", "blocks.3:q4-ncc-crans-s1.6-pt"]
    paths = sorted((samples_dir / "images").iterdir())[:8]
    with EdgeClient(
        daemon.endpoint, spec=lite0, window=1, adapt=AdaptConfig(latency_ms=1.0), ladder=ladder
    ) as edge:
        edge.connect()
        results = [edge.predict(path) for path in paths]
    assert [(r.cut, r.codec) for r in results[:3]] == [("blocks", "q8-ncc-zstd")] * 3
    assert {(r.cut, r.codec) for r in results[3:]} == {("blocks.3", "q4-ncc-crans-s1.6-pt")}
    assert all(r.ok for r in results)  # a feature of the wrong cut is refused (shape_mismatch)
