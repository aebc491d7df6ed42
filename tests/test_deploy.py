"""deploy/: the configurations the artefacts carry pass check-config, and what they run and probe exists."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from gateway.cli import _parser
from gateway.config import ENV_STORE_ENCRYPTION_KEY, ENV_UPSTREAM_BEARER, load_config
from tests.conftest import SEAN_TOKEN
from tests.test_cli import run_cli

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
SIDECAR = DEPLOY / "kubernetes" / "sidecar.yaml"
UNIT = DEPLOY / "systemd" / "dm-gateway.service"
SECRETS = {ENV_UPSTREAM_BEARER: SEAN_TOKEN}


def sidecar_config_toml() -> str:
    """The config.toml block scalar of the ConfigMap, de-indented (no YAML library needed for one key)."""
    text = SIDECAR.read_text("utf-8")
    match = re.search(r"^(\s*)config\.toml: \|\n((?:\1  .*\n|\n)+)", text, re.MULTILINE)
    assert match, "no config.toml in the ConfigMap"
    indent = len(match.group(1)) + 2
    return "".join(line[indent:] + "\n" for line in match.group(2).splitlines())


def check_config(path: Path, env: dict[str, str], tmp_path: Path) -> None:
    """check-config on the file at ``path``, its store's directory (on the image's volume) moved to ``tmp_path``:
    check-config opens the store, whose directory the gateway never creates."""
    import os

    text = path.read_text("utf-8")
    assert "sqlite:////var/lib/dm-gateway/" in text
    local = tmp_path / "local.toml"
    local.write_text(text.replace("sqlite:////var/lib/dm-gateway/", f"sqlite:///{tmp_path}/"), "utf-8")
    result = run_cli("check-config", "--config", str(local), env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_an_installed_gateway_carries_every_package_of_the_source() -> None:
    """``pip install .`` (the README's first command, the image) installs only the packages pyproject.toml
    lists: a package added under gateway/ and not listed there works in the editable test install and
    fails to import once installed."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]["packages"])
    in_source = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "gateway").rglob("__init__.py")}
    assert in_source - listed == set()


def test_the_container_config_passes_check_config(tmp_path: Path) -> None:
    check_config(DEPLOY / "config.toml", {}, tmp_path)
    server = load_config(DEPLOY / "config.toml", env={}).server
    assert server.host == "0.0.0.0" and server.admin_host == "127.0.0.1"


def test_the_image_is_built_on_a_python_the_project_supports() -> None:
    """The official Python image of a version ``pip install .`` accepts (``requires-python``)."""
    [base] = re.findall(r"^FROM (\S+)", DOCKERFILE.read_text("utf-8"), re.MULTILINE)
    match = re.fullmatch(r"python:(\d+\.\d+)(?:\.\d+)?(?:-\S+)?", base)
    assert match, f"{base}: not an official Python image"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["requires-python"]
    assert SpecifierSet(requires).contains(match.group(1)), (base, requires)


def test_the_dockerfile_serves_its_config_and_checks_health_on_its_admin_port() -> None:
    text = DOCKERFILE.read_text("utf-8")
    assert "COPY deploy/config.toml /etc/dm-gateway/config.toml" in text
    user = re.search(r"^USER (\S+)$", text, re.MULTILINE)
    assert user and user.group(1) not in ("root", "0")
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.MULTILINE)
    cmd = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert entrypoint and cmd
    argv = [*_json_list(entrypoint.group(1)), *_json_list(cmd.group(1))]
    assert argv[0] == "dm-gateway"
    args = _parser().parse_args(argv[1:])
    assert (args.command, args.config) == ("serve", "/etc/dm-gateway/config.toml")
    server = load_config(DEPLOY / "config.toml", env={}).server
    healthcheck = text.split("HEALTHCHECK", 1)[1].split("\n\n", 1)[0]
    assert f"http://127.0.0.1:{server.admin_port}/healthz" in healthcheck
    assert server.shutdown_timeout < 10  # docker stop's default grace period


def _json_list(text: str) -> list[str]:
    import json

    value = json.loads(text)
    assert isinstance(value, list)
    return value


def test_the_sidecar_config_passes_check_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(sidecar_config_toml())
    check_config(path, SECRETS, tmp_path)
    config = load_config(path, env=SECRETS)
    # Loopback for the application beside it; the Pod's interfaces for the kubelet's probes.
    assert config.server.host == "127.0.0.1" and config.server.admin_host == "0.0.0.0"
    assert config.auth.sidecar


def test_the_sidecar_pod_probes_the_admin_port_and_passes_the_secrets_by_env() -> None:
    text = SIDECAR.read_text("utf-8")
    config = tomllib.loads(sidecar_config_toml())
    admin_port = config["server"]["admin_port"]
    assert re.search(rf"- name: admin\n\s+containerPort: {admin_port}\n", text)
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        block = text.split(f"{probe}:", 1)[1]
        assert re.match(rf"\s+httpGet:\n\s+path: {path}\n\s+port: admin\n", block), probe
    for name in (ENV_UPSTREAM_BEARER, ENV_STORE_ENCRYPTION_KEY):
        assert re.search(rf"^\s+{name}: ", text, re.MULTILINE), name
    assert "secretRef:\n                name: dm-gateway-secrets" in text
    args = re.search(r"args: (\[.*\])", text)
    assert args
    parsed = _parser().parse_args(_json_list(args.group(1)))
    assert (parsed.command, parsed.config) == ("serve", "/etc/dm-gateway/config.toml")
    grace = re.search(r"terminationGracePeriodSeconds: (\d+)", text)
    assert grace and config["server"]["shutdown_timeout"] < int(grace.group(1))


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text("utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_systemd_unit_runs_existing_commands_and_outlasts_the_drain() -> None:
    settings = unit_settings()
    for key in ("ExecStart", "ExecStartPre"):
        argv = shlex.split(settings[key][0])
        assert argv[0].endswith("/dm-gateway")
        args = _parser().parse_args(argv[1:])
        assert args.config == "/etc/dm-gateway/config.toml"
    assert shlex.split(settings["ExecStart"][0])[1] == "serve"
    assert settings["KillSignal"] == ["SIGTERM"]
    assert settings["EnvironmentFile"] == ["/etc/dm-gateway/secrets.env"]
    # Above the default drain time and the example's, so SIGKILL never cuts a drain short.
    for source in (load_config(env={}), load_config(ROOT / "config.example.toml", env={})):
        assert int(settings["TimeoutStopSec"][0]) > source.server.shutdown_timeout
    assert settings["RestartPreventExitStatus"] == ["2"]  # a configuration error is not retried


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this environment's dm-gateway.
    executable = Path(sys.executable).parent / "dm-gateway"
    if not executable.exists():
        pytest.skip("the dm-gateway script is not installed next to this Python")
    unit = tmp_path / "dm-gateway.service"
    unit.write_text(UNIT.read_text("utf-8").replace("/usr/local/bin/dm-gateway", str(executable)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    about_unit = [line for line in (result.stdout + result.stderr).splitlines() if str(unit) in line]
    assert result.returncode == 0 and not about_unit, result.stdout + result.stderr
