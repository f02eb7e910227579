"""Without a token the CLI uses the admin token that a local `sandboxd serve` wrote at start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import run_cli
from tests.support.server import Sandboxd, running_sandboxd


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandboxd]:
    """A sandboxd given no admin token (blank counts as unset), so it generates one."""
    data = tmp_path_factory.mktemp("token-file")
    with running_sandboxd(data, env={"SANDBOXD_ADMIN_TOKEN": ""}) as server:
        yield server


def test_the_server_wrote_a_private_token_file(generated: Sandboxd) -> None:
    path = generated.data_dir / "admin-token"

    assert path.read_text().strip()
    assert path.stat().st_mode & 0o077 == 0


def test_the_token_file_in_the_data_dir_is_used(generated: Sandboxd, tmp_path: Path) -> None:
    env = {
        "SANDBOXD_URL": generated.url,
        "SANDBOXD_DATA_DIR": str(generated.data_dir),
        "HOME": str(tmp_path),
    }

    result = run_cli("list", "-o", "json", env=env)

    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith("{")


def test_the_default_data_dir_is_under_home(generated: Sandboxd, tmp_path: Path) -> None:
    (tmp_path / ".sandboxd").mkdir()
    token = (generated.data_dir / "admin-token").read_text()
    (tmp_path / ".sandboxd" / "admin-token").write_text(token)

    result = run_cli("list", env={"SANDBOXD_URL": generated.url, "HOME": str(tmp_path)})

    assert result.exit_code == 0, result.output


def test_without_a_token_file_the_server_refuses_with_exit_5(
    generated: Sandboxd, tmp_path: Path
) -> None:
    result = run_cli("list", env={"SANDBOXD_URL": generated.url, "HOME": str(tmp_path)})

    assert result.exit_code == 5
    assert "SANDBOXD_TOKEN" in result.stderr
