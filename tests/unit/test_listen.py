"""`sandboxd serve` listens on loopback unless told otherwise, and every shipped deployment
that listens on all interfaces (the image through docker-compose.yml, manifests/) says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from typer.main import get_command

from sandboxd.__main__ import cli
from sandboxd.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_flag(host: str) -> None:
    assert Settings(host=host).host == host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.0.0.5", "sandboxd.example.com"])
def test_any_other_host_is_refused_with_why_and_what_to_do(host: str) -> None:
    with pytest.raises(ValidationError) as e:
        Settings(host=host)
    message = str(e.value)
    assert "plain HTTP" in message and "--insecure-listen" in message
    assert "SANDBOXD_INSECURE_LISTEN=1" in message
    assert Settings(host=host, insecure_listen=True).host == host


def serve_settings(
    args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Settings as `sandboxd serve ARGS` builds them in environment `env`."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    serve = get_command(cli).commands["serve"]  # type: ignore[attr-defined]
    options = serve.make_context("serve", list(args)).params
    given = {k: v for k, v in options.items() if k in Settings.model_fields and v not in (None, [])}
    return Settings(**given)


def test_the_compose_service_runs_the_image_with_the_flag_in_its_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env: dict[str, Any] = compose["services"]["sandboxd"]["environment"]
    dockerfile = (ROOT / "docker" / "sandboxd.Dockerfile").read_text()
    entrypoint = next(line for line in dockerfile.splitlines() if line.startswith("ENTRYPOINT"))
    argv = yaml.safe_load(entrypoint.removeprefix("ENTRYPOINT"))
    assert argv[:2] == ["sandboxd", "serve"]
    plain = {k: str(v) for k, v in env.items() if "${" not in str(v)}

    settings = serve_settings(argv[2:], plain, monkeypatch)

    assert (settings.host, settings.insecure_listen) == ("0.0.0.0", True)


def test_the_control_plane_manifest_passes_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = yaml.safe_load_all((ROOT / "manifests" / "workloads" / "control-plane.yaml").read_text())
    deployment = next(d for d in docs if d and d.get("kind") == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["sandboxd", "serve"]

    settings = serve_settings(container["command"][2:], {}, monkeypatch)

    assert (settings.host, settings.insecure_listen) == ("0.0.0.0", True)
