"""Where the Kubernetes API is and how to authenticate: a kubeconfig, or the in-cluster account.

Supported credentials, the ones clusters hand out in practice: client certificates (file or
inline data), bearer tokens (inline or a token file, re-read as it rotates), and exec plugins
(`client.authentication.k8s.io` ExecCredential: EKS, GKE, AKS), whose token is cached until it
expires. Anything else is a `KubeConfigError` naming the file and the field.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

IN_CLUSTER = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD = 60.0  # kubelet rotates projected tokens; client-go re-reads about this often


class KubeConfigError(Exception):
    """The cluster cannot be reached with this configuration; the message says why."""


@dataclass
class Credentials:
    """A bearer token from one source; `header()` gives the current Authorization value."""

    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    exec_spec: dict[str, Any] | None = field(default=None, repr=False)
    _cached: str | None = field(default=None, repr=False)
    _until: float = 0.0

    @property
    def stale(self) -> bool:
        """The next `header()` reads a file or runs a plugin (do that off the event loop)."""
        refreshable = self.token_file is not None or self.exec_spec is not None
        return not self.token and refreshable and time.monotonic() >= self._until

    def header(self) -> str | None:
        if self.token:
            return f"Bearer {self.token}"
        if self.token_file is None and self.exec_spec is None:
            return None
        if self._cached is None or time.monotonic() >= self._until:
            self._refresh()
        return f"Bearer {self._cached}"

    def expire(self) -> None:
        """Forget the cached token (after a 401), so the next request fetches a new one."""
        self._until = 0.0

    def _refresh(self) -> None:
        if self.token_file is not None:
            try:
                self._cached = self.token_file.read_text().strip()
            except OSError as e:
                raise KubeConfigError(f"{self.token_file}: cannot read the token: {e}") from e
            self._until = time.monotonic() + TOKEN_REREAD
        elif self.exec_spec is not None:
            self._cached, self._until = _run_exec(self.exec_spec)


@dataclass(frozen=True)
class Connection:
    server: str
    ssl_context: ssl.SSLContext | bool
    credentials: Credentials
    namespace: str | None = None  # the in-cluster pod's own namespace


def load(kubeconfig: Path | None, *, context: str | None = None) -> Connection:
    """The kubeconfig when given (else $KUBECONFIG, else ~/.kube/config when it exists), else the
    in-cluster service account."""
    path = kubeconfig
    if path is None and os.environ.get("KUBECONFIG"):
        path = Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
    if path is None and (Path.home() / ".kube" / "config").exists():
        path = Path.home() / ".kube" / "config"
    if path is None:
        return in_cluster()
    return from_kubeconfig(path, context=context)


def in_cluster() -> Connection:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port or not (IN_CLUSTER / "token").exists():
        raise KubeConfigError(
            "no kubeconfig given (--kubeconfig, $KUBECONFIG or ~/.kube/config) and not running "
            "in a cluster (no KUBERNETES_SERVICE_HOST or service account token)"
        )
    context = ssl.create_default_context(cafile=str(IN_CLUSTER / "ca.crt"))
    namespace_file = IN_CLUSTER / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.exists() else None
    server_host = f"[{host}]" if ":" in host else host
    return Connection(
        f"https://{server_host}:{port}",
        context,
        Credentials(token_file=IN_CLUSTER / "token"),
        namespace,
    )


def from_kubeconfig(path: Path, *, context: str | None = None) -> Connection:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise KubeConfigError(f"{path}: cannot read the kubeconfig: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise KubeConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise KubeConfigError(f"{path}: not a kubeconfig (a mapping with clusters and users)")
    base = path.resolve().parent
    name = context or doc.get("current-context")
    if not name:
        raise KubeConfigError(f"{path}: no current-context, and no context was given")
    ctx = _named(doc, "contexts", name, path)["context"]
    cluster = _named(doc, "clusters", ctx.get("cluster"), path)["cluster"]
    user = _named(doc, "users", ctx.get("user"), path).get("user") or {}
    server = cluster.get("server")
    if not server:
        raise KubeConfigError(f"{path}: cluster {ctx.get('cluster')!r} has no server")
    return Connection(
        server.rstrip("/"),
        _ssl_context(cluster, user, base, path) if server.startswith("https") else False,
        _credentials(user, base, path),
        ctx.get("namespace"),
    )


def _named(doc: dict[str, Any], kind: str, name: object, path: Path) -> dict[str, Any]:
    for item in doc.get(kind) or []:
        if isinstance(item, dict) and item.get("name") == name:
            return item
    raise KubeConfigError(f"{path}: {kind}: no entry named {name!r}")


def _material(
    section: dict[str, Any], key: str, base: Path, path: Path
) -> tuple[bytes | None, str | None]:
    """(inline bytes, file path) of a `<key>-data` / `<key>` pair; at most one is set."""
    data = section.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(data), None
        except ValueError as e:
            raise KubeConfigError(f"{path}: {key}-data is not base64") from e
    file = section.get(key)
    return None, (str(base / file) if file else None)


def _ssl_context(
    cluster: dict[str, Any], user: dict[str, Any], base: Path, path: Path
) -> ssl.SSLContext:
    if cluster.get("insecure-skip-tls-verify"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        ca_data, ca_file = _material(cluster, "certificate-authority", base, path)
        context = ssl.create_default_context(
            cafile=ca_file, cadata=ca_data.decode() if ca_data else None
        )
    cert_data, cert_file = _material(user, "client-certificate", base, path)
    key_data, key_file = _material(user, "client-key", base, path)
    if (cert_data or cert_file) and (key_data or key_file):
        _load_cert_chain(context, cert_data, cert_file, key_data, key_file)
    return context


def _load_cert_chain(
    context: ssl.SSLContext,
    cert_data: bytes | None,
    cert_file: str | None,
    key_data: bytes | None,
    key_file: str | None,
) -> None:
    """`ssl` loads certificates only from files: inline data goes through a private temporary
    directory that is removed at once."""
    with tempfile.TemporaryDirectory(prefix="sandboxd-kube-") as tmp:
        if cert_data is not None:
            cert_file = os.path.join(tmp, "client.crt")
            Path(cert_file).write_bytes(cert_data)
        if key_data is not None:
            key_file = os.path.join(tmp, "client.key")
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key_data)
        assert cert_file is not None
        assert key_file is not None
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as e:
            raise KubeConfigError(f"cannot load the client certificate: {e}") from e


def _credentials(user: dict[str, Any], base: Path, path: Path) -> Credentials:
    if user.get("token"):
        return Credentials(token=str(user["token"]))
    if user.get("tokenFile"):
        return Credentials(token_file=base / user["tokenFile"])
    if user.get("exec"):
        spec = dict(user["exec"])
        if not spec.get("command"):
            raise KubeConfigError(f"{path}: users[].user.exec has no command")
        return Credentials(exec_spec=spec)
    if user.get("auth-provider"):
        raise KubeConfigError(
            f"{path}: auth-provider plugins are gone from Kubernetes; use an exec plugin"
        )
    if user.get("username"):
        raise KubeConfigError(f"{path}: basic auth is not supported; use a token or certificate")
    return Credentials()


def _run_exec(spec: dict[str, Any]) -> tuple[str, float]:
    """Run an exec credential plugin; its token and until when to trust it (monotonic)."""
    env = {**os.environ, **{e["name"]: e["value"] for e in spec.get("env") or []}}
    api_version = spec.get("apiVersion", "client.authentication.k8s.io/v1")
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    )
    argv = [spec["command"], *(spec.get("args") or [])]
    try:
        done = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KubeConfigError(f"credential plugin {argv[0]!r} failed: {e}") from e
    if done.returncode != 0:
        raise KubeConfigError(
            f"credential plugin {argv[0]!r} exited {done.returncode}: "
            f"{done.stderr.decode(errors='replace').strip()[-500:]}"
        )
    try:
        status = json.loads(done.stdout)["status"]
        token = status["token"]
    except (ValueError, KeyError, TypeError) as e:
        raise KubeConfigError(f"credential plugin {argv[0]!r} gave no status.token") from e
    until = time.monotonic() + 300.0
    if status.get("expirationTimestamp"):
        expires = datetime.fromisoformat(status["expirationTimestamp"].replace("Z", "+00:00"))
        until = time.monotonic() + max(0.0, expires.timestamp() - time.time() - 30)
    return str(token), until
