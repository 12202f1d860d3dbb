"""The deployment planner: known optima on a synthetic profile and sweep, accuracy floors and
budgets, clear errors for bad files, the CLI end to end, and a real shaped link."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from edgecloud.cli import main
from edgecloud.experiments.plan import (
    MESSAGE_OVERHEAD_BYTES,
    PACKET_OVERHEAD,
    Objective,
    PlanInputError,
    Profile,
    build_candidates,
    load_profile,
    load_sweep,
    plan,
)

REPO = Path(__file__).resolve().parents[1]

# Edge: the whole model 100 ms, head to A 40 ms, to B 80 ms. Cloud: 10 ms, tails 6 and 1 ms.
EDGE = {"model": "m", "model_ms": 100.0, "cuts": [
    {"cut": "A", "head_ms": 40.0, "tail_ms": 30.0},
    {"cut": "B", "head_ms": 80.0, "tail_ms": 5.0},
]}  # fmt: skip
CLOUD = {"model": "m", "model_ms": 10.0, "cuts": [
    {"cut": "A", "head_ms": 4.0, "tail_ms": 6.0},
    {"cut": "B", "head_ms": 9.0, "tail_ms": 1.0},
]}  # fmt: skip


def _row(cut: str, codec: str, size: float, drop: float, fidelity: float) -> Dict[str, object]:
    return {"model": "m", "cut": cut, "codec": codec, "bytes_per_image": size, "encode_ms": 1.0,
            "decode_ms": 1.0, "top1_drop": drop, "fidelity": fidelity}  # fmt: skip


SWEEP = {"rows": [
    _row("input", "jpeg-input-q90", 20000, 0.005, 0.97),
    _row("A", "a8", 5000, 0.0, 1.0),
    _row("A", "a2", 1000, 0.05, 0.85),  # small but 5 points off
    _row("B", "b4", 500, 0.008, 0.96),
    _row("C", "c4", 10, 0.0, 1.0),  # a cut neither profile has: skipped
]}  # fmt: skip


def _wire_ms(size: float, mbps: float) -> float:
    return (size * (1 + PACKET_OVERHEAD) + MESSAGE_OVERHEAD_BYTES) * 8 / (mbps * 1e3)


# By hand (rtt 0): edge-only 100; cloud-only 1 + wire(20000) + 1 + 10;
# A a8: 40 + 1 + wire(5000) + 1 + 6; A a2: the same with wire(1000); B b4: 81 + wire(500) + 2.
EXPECTED = {
    "edge-only": lambda bw: 100.0,
    "cloud-only jpeg-input-q90": lambda bw: 12.0 + _wire_ms(20000, bw),
    "A a8": lambda bw: 48.0 + _wire_ms(5000, bw),
    "A a2": lambda bw: 48.0 + _wire_ms(1000, bw),
    "B b4": lambda bw: 83.0 + _wire_ms(500, bw),
}
BANDWIDTHS = [0.1, 1.0, 3.0, 10.0, 1000.0]


@pytest.fixture
def files(tmp_path) -> Dict[str, Path]:
    paths = {"edge": tmp_path / "edge.json", "cloud": tmp_path / "cloud.json",
             "sweep": tmp_path / "sweep.json"}  # fmt: skip
    for key, payload in (("edge", EDGE), ("cloud", CLOUD), ("sweep", SWEEP)):
        paths[key].write_text(json.dumps(payload))
    return paths


@pytest.fixture
def candidates(files):
    edge, cloud = load_profile(files["edge"]), load_profile(files["cloud"])
    return build_candidates(edge, cloud, load_sweep(files["sweep"]))


def _names(choices) -> List[str]:
    return [c.candidate.name if c.candidate else None for c in choices]


def test_the_latency_model_is_the_hand_computed_one(candidates):
    assert sorted(c.name for c in candidates) == sorted(EXPECTED)  # C: in no profile
    for c in candidates:
        for bw in BANDWIDTHS:
            assert c.latency_ms(bw) == pytest.approx(EXPECTED[c.name](bw))
        assert c.latency_ms(10.0, rtt_ms=25.0) == pytest.approx(
            EXPECTED[c.name](10.0) + (0.0 if c.name == "edge-only" else 25.0)
        )


def test_the_planner_picks_the_known_optimum_at_each_bandwidth(candidates):
    floor = Objective(max_drop=0.01)
    choices = plan(candidates, BANDWIDTHS, floor)
    # 0.1: edge-only 100 < B 174; 1: B 92.1 < A 96 < edge 100; 3: A 64 < cloud 71;
    # 10 and 1000: cloud-only (29.8, 12.2)
    assert _names(choices) == ["edge-only", "B b4", "A a8", "cloud-only jpeg-input-q90",
                               "cloud-only jpeg-input-q90"]  # fmt: skip
    for choice in choices:
        best = min(
            EXPECTED[n](choice.bandwidth_mbps) for n in EXPECTED if n != "A a2"
        )  # a2 is below the floor
        assert choice.latency_ms == pytest.approx(best)


def test_the_accuracy_floor_is_respected(candidates):
    assert _names(plan(candidates, [1.0, 3.0], Objective()))[0] == "A a2"  # fastest without one
    assert "A a2" not in _names(plan(candidates, BANDWIDTHS, Objective(max_drop=0.01)))
    by_fidelity = plan(candidates, [1.0, 10.0], Objective(min_fidelity=0.97))
    assert _names(by_fidelity) == ["A a8", "cloud-only jpeg-input-q90"]  # B b4 is 96 %
    assert _names(plan(candidates, [1.0], Objective(min_fidelity=0.999, max_drop=0.0))) == ["A a8"]


def test_edge_only_and_cloud_only_win_at_the_extremes(candidates):
    choices = plan(candidates, [0.01, 100000.0], Objective(max_drop=0.01))
    assert _names(choices) == ["edge-only", "cloud-only jpeg-input-q90"]


def test_budgets_maximise_accuracy(candidates):
    # at 3 Mbit/s within 60 ms only A a2 (52.5 ms); within 70 ms A a8 (64 ms, fidelity 1)
    assert _names(plan(candidates, [3.0], Objective(latency_budget_ms=60))) == ["A a2"]
    assert _names(plan(candidates, [3.0], Objective(latency_budget_ms=70))) == ["A a8"]
    assert _names(plan(candidates, [3.0], Objective(latency_budget_ms=40))) == [None]
    # a bytes budget: edge-only sends nothing and is exact
    assert _names(plan(candidates, [3.0], Objective(max_bytes=1000))) == ["edge-only"]
    floor_and_budget = Objective(max_drop=0.01, latency_budget_ms=95)
    assert _names(plan(candidates, [1.0], floor_and_budget)) == ["B b4"]


def test_bad_inputs_are_clear_errors(files, tmp_path):
    with pytest.raises(PlanInputError, match="cannot read the profile"):
        load_profile(tmp_path / "missing.json")
    (tmp_path / "garbled.json").write_text('{"model": "m", "cuts": [')
    with pytest.raises(PlanInputError, match="is not JSON"):
        load_profile(tmp_path / "garbled.json")
    # a profile as written before tail_ms and model_ms were recorded
    old = json.loads((REPO / "docs" / "results" / "profile_lite0.json").read_text())
    del old["model_ms"]
    for row in old["cuts"]:
        del row["tail_ms"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(PlanInputError, match="lacks 'model_ms'.*edgecloud profile --json"):
        load_profile(tmp_path / "old.json")
    assert load_profile(REPO / "docs" / "results" / "profile_lite0.json").model_ms > 0
    (tmp_path / "rows.json").write_text(json.dumps({"rows": [{"model": "m", "cut": "A"}]}))
    with pytest.raises(PlanInputError, match="row 0 .* lacks codec, bytes_per_image"):
        load_sweep(tmp_path / "rows.json")
    with pytest.raises(PlanInputError, match="has no rows"):
        load_sweep(files["edge"])
    other_model = Profile("n", 1.0, {}, {})
    with pytest.raises(PlanInputError, match="no rows of n"):
        build_candidates(other_model, other_model, SWEEP["rows"])


def test_cli_writes_the_table_json_and_plot(files, tmp_path, capsys):
    out, plot = tmp_path / "plan.json", tmp_path / "plan.png"
    argv = ["plan", "--profile", str(files["edge"]), "--cloud-profile", str(files["cloud"]),
            "--sweep", str(files["sweep"]), "--bandwidth", "0.1,1,3,10,1000", "--max-drop", "1",
            "--json", str(out), "--plot", str(plot)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "top-1 drop <= 1 points" in printed and "B b4" in printed
    result = json.loads(out.read_text())
    assert [r["choice"] for r in result["plan"]] == ["edge-only", "B b4", "A a8",
        "cloud-only jpeg-input-q90", "cloud-only jpeg-input-q90"]  # fmt: skip
    assert result["plan"][0]["cloud_only_ms"] == pytest.approx(EXPECTED[
        "cloud-only jpeg-input-q90"](0.1))  # fmt: skip
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"
    assert main([*argv[:-4], "--bandwidth", "3"]) == 0
    assert "chosen: A a8" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra,message",
    [(["--bandwidth", "0"], "--bandwidth"), (["--min-fidelity", "150"], "--min-fidelity"),
     (["--max-drop", "-1"], "--max-drop")],
)  # fmt: skip
def test_cli_bad_values_exit_2_and_bad_files_exit_1(files, tmp_path, extra, message, capsys):
    base = ["plan", "--profile", str(files["edge"]), "--sweep", str(files["sweep"])]
    with pytest.raises(SystemExit) as exit_:
        main([*base, *extra])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert main(["plan", "--profile", str(tmp_path / "no.json"), "--sweep", "x"]) == 1
    err = capsys.readouterr().err
    assert "cannot read the profile" in err and err.count("\n") == 1


EDGE_SCRIPT = """
import json, sys
from edgecloud.edge import EdgeClient
from edgecloud.edge.sources import iter_frames
frames = list(iter_frames(sys.argv[2], limit=3))
with EdgeClient(sys.argv[1], cut="blocks", codec="q8-ncc-zstd", window=1) as edge:
    edge.connect()
    edge.warm_up()
    for _ in range(2):  # one round per rate; the test changes the rate in between
        sys.stdin.readline()
        results = [edge.predict(image, name) for name, image in frames]
        print(json.dumps([[r.bytes_sent, r.timings["rtt_ms"], r.timings["server_ms"]]
                          for r in results]), flush=True)
"""


def test_a_shaped_link_limits_a_real_daemon_and_edge_and_changes_rate_mid_run(samples_dir):
    from edgecloud.cloud.process import DaemonProcess
    from edgecloud.experiments.shaped_link import ShapedLink, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with ShapedLink(rate_mbit=1.0) as link:
        daemon = DaemonProcess(
            ["--bind", "tcp://127.0.0.1:0", "--cut", "blocks", "--decode-workers", "0",
             "--stats-interval", "3600"],
            prefix=link.command([]),
        )  # fmt: skip
        edge = None
        try:
            endpoint = daemon.start()
            edge = link.popen(
                [sys.executable, "-c", EDGE_SCRIPT, endpoint, str(samples_dir / "images")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            rounds = []
            for rate in (1.0, 100.0):
                link.set_rate(rate)
                edge.stdin.write("go\n")
                edge.stdin.flush()
                rounds.append(json.loads(edge.stdout.readline()))
        finally:
            if edge is not None:
                edge.kill()
                edge.wait()
            daemon.stop(30)
    slow, fast = rounds
    for (sent, rtt_slow, server_slow), (_, rtt_fast, server_fast) in zip(slow, fast):
        wire_ms = sent * 8 / 1e3  # at 1 Mbit/s, without any overhead
        assert sent > 8000 and rtt_slow > 0.9 * wire_ms, (sent, rtt_slow)
        # the link's share of the round trip (the daemon's own time varies with the CPU)
        link_slow, link_fast = rtt_slow - server_slow, rtt_fast - server_fast
        assert link_fast < link_slow / 5, (rtt_fast, server_fast, rtt_slow, server_slow)
