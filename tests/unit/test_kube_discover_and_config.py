"""The catalog read from cluster Services, and kubeconfig loading: pure or file-only parts."""

from __future__ import annotations

import base64
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from sandboxd.core.catalog import Catalog, parse_catalog
from sandboxd.runtime.kubernetes import config, discover


def _service(name: str, labels: dict[str, str], notes: dict[str, str], ports: list[int]) -> Any:
    return {
        "metadata": {"name": name, "namespace": "shop", "labels": labels, "annotations": notes},
        "spec": {"ports": [{"port": p} for p in ports]},
    }


def test_labelled_services_become_catalog_entries_and_bad_ones_are_named() -> None:
    found, problems = discover.catalog_services(
        [
            _service("echo-svc", {"sandboxd.dev/service": "echo"}, {"sandboxd.dev/protocol": "mcp",
                     "sandboxd.dev/port": "9090", "sandboxd.dev/deployment": "echo-v1"}, [80, 9090]),
            _service("bad", {"sandboxd.dev/service": "Bad_Name"}, {}, [80]),
            _service("noport", {"sandboxd.dev/service": "np"}, {"sandboxd.dev/port": "81"}, [80]),
        ]
    )  # fmt: skip
    assert [s.name for s in found] == ["echo"]
    echo = found[0]
    assert echo.protocol == "mcp"
    assert echo.baseline.url == "http://echo-svc.shop.svc.cluster.local:9090"
    assert echo.kubernetes is not None
    assert (echo.kubernetes.deployment, echo.kubernetes.service, echo.kubernetes.port) == (
        "echo-v1", "echo-svc", 9090,
    )  # fmt: skip
    assert len(problems) == 2
    assert problems[0].startswith("Service shop/bad:")
    assert "81 is not one of the Service's ports" in problems[1]


def test_the_file_wins_over_the_cluster() -> None:
    file = parse_catalog(
        "services:\n  - name: echo\n    baseline: {url: 'http://file:1'}\n", source="f"
    )
    found, _ = discover.catalog_services(
        [_service("echo", {"sandboxd.dev/service": "echo"}, {}, [80]),
         _service("other", {"sandboxd.dev/service": "other"}, {}, [80])]
    )  # fmt: skip
    merged, skipped = discover.merge(file, found)
    assert [(s.name, s.baseline.url) for s in merged.services] == [
        ("echo", "http://file:1"), ("other", "http://other.shop.svc.cluster.local:80"),
    ]  # fmt: skip
    assert skipped and "echo" in skipped[0]
    assert discover.merge(Catalog(), [])[0].services == []


def _kubeconfig(tmp_path: Path, user: dict[str, Any]) -> Path:
    import yaml

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "n"}}],
        "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:1/"}}],
        "users": [{"name": "u", "user": user}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_token_and_token_file_credentials(tmp_path: Path) -> None:
    conn = config.from_kubeconfig(_kubeconfig(tmp_path, {"token": "abc"}))
    assert (conn.server, conn.namespace) == ("http://127.0.0.1:1", "n")
    assert conn.credentials.header() == "Bearer abc"
    (tmp_path / "tok").write_text("from-file\n")
    conn = config.from_kubeconfig(_kubeconfig(tmp_path, {"tokenFile": "tok"}))
    assert conn.credentials.header() == "Bearer from-file"


def test_exec_plugins_give_a_token_and_failures_are_explained(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, os, sys\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['kind'] == 'ExecCredential'\n"
        "print(json.dumps({'status': {'token': 'exec-' + os.environ['WHO'],"
        " 'expirationTimestamp': '2999-01-01T00:00:00Z'}}))\n"
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    user = {"exec": {"command": sys.executable, "args": [str(plugin)],
                     "env": [{"name": "WHO", "value": "ci"}]}}  # fmt: skip
    conn = config.from_kubeconfig(_kubeconfig(tmp_path, user))
    assert conn.credentials.header() == "Bearer exec-ci"
    broken = {"exec": {"command": sys.executable, "args": ["-c", "import sys; sys.exit(3)"]}}
    conn = config.from_kubeconfig(_kubeconfig(tmp_path, broken))
    with pytest.raises(config.KubeConfigError, match="exited 3"):
        conn.credentials.header()


@pytest.mark.parametrize(
    ("text", "message"),
    [("[1, 2]", "not a kubeconfig"), ("a: [", "not valid YAML"),
     ("current-context: x\ncontexts: []", "contexts: no entry named 'x'"),
     ("contexts: []", "no current-context")],
)  # fmt: skip
def test_bad_kubeconfigs_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "kc"
    path.write_text(text)
    with pytest.raises(config.KubeConfigError, match=message):
        config.from_kubeconfig(path)
    with pytest.raises(config.KubeConfigError, match="cannot read"):
        config.from_kubeconfig(tmp_path / "missing")


def test_inline_client_certificate_data_must_be_a_real_certificate(tmp_path: Path) -> None:
    user = {
        "client-certificate-data": base64.b64encode(b"not a cert").decode(),
        "client-key-data": base64.b64encode(b"not a key").decode(),
    }
    path = _kubeconfig(tmp_path, user)
    path.write_text(path.read_text().replace("http://", "https://"))
    with pytest.raises(config.KubeConfigError, match="client certificate"):
        config.from_kubeconfig(path)


def test_in_cluster_uses_the_service_account_and_rereads_its_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.kube import KubeControlPlane

    plane = KubeControlPlane(root=tmp_path / "pki")
    plane.root.mkdir()
    plane._certificates()  # a real CA certificate for the service account's ca.crt
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes((plane.root / "ca.crt").read_bytes())
    (account / "token").write_text("first\n")
    (account / "namespace").write_text("sandboxd\n")
    monkeypatch.setattr(config, "IN_CLUSTER", account)
    monkeypatch.setattr(config, "TOKEN_REREAD", 0.0)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    conn = config.load(None)
    assert (conn.server, conn.namespace) == ("https://[fd00::1]:443", "sandboxd")
    assert conn.credentials.header() == "Bearer first"
    (account / "token").write_text("rotated\n")
    assert conn.credentials.header() == "Bearer rotated"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(config.KubeConfigError, match="not running in a cluster"):
        config.load(None)
