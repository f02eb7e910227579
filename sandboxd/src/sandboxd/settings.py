"""Settings: typed, read once at the edge (`sandboxd serve`), passed in; never built at import."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sandboxd.core.capability import MIN_KEY
from sandboxd.core.duration import parse_duration


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SANDBOXD_", extra="ignore")

    insecure_listen: bool = False
    """Allow a `host` other than loopback. The API is plain HTTP: tokens cross the network in
    clear and a token runs commands (forks), so only where the network is private (a container
    behind a published loopback port, a cluster Service) or behind a TLS proxy."""
    host: str = "127.0.0.1"
    """Address the API listens on: loopback unless `insecure_listen` says otherwise."""
    port: int = Field(default=7070, ge=0, le=65535)
    """Port the API listens on."""
    data_dir: Path = Path("~/.sandboxd")
    """Where the SQLite database, the admin token and the local runtime's fork logs live."""
    database_url: str | None = None
    """SQLAlchemy URL; default a SQLite file in the data dir. `postgresql+psycopg://…` for HA."""
    catalog: Path | None = None
    """The catalog file (`sandboxd.yaml`); without one, no service can be forked."""
    runtime: Literal["local", "kubernetes"] = "local"
    """Where forks run. `local`: child processes on this machine; `kubernetes`: one namespace
    per sandbox in a cluster."""
    kubeconfig: Path | None = None
    """kubernetes: the kubeconfig to use (its current context); in-cluster config when absent."""
    kube_context: str | None = None
    """kubernetes: a context of the kubeconfig other than its current one."""
    istio: bool = False
    """kubernetes: also write Istio VirtualServices so Envoy routes each sandbox's traffic."""
    router_namespace: str = "sandboxd"
    """kubernetes: the namespace the router runs in (sandbox ingress comes only from there)."""
    egress_allow: list[str] = []
    """kubernetes: CIDRs a sandbox may reach besides DNS, the router and the baselines."""
    catalog_from_cluster: bool = False
    """kubernetes: add the Services labelled `sandboxd.dev/service=<name>` to the catalog."""
    quota_cpu: str = "4"
    """kubernetes: CPU a sandbox's namespace may request and use, in all."""
    quota_memory: str = "8Gi"
    """kubernetes: memory a sandbox's namespace may request and use, in all."""
    quota_pods: int = Field(default=20, ge=1)
    """kubernetes: pods a sandbox's namespace may hold."""
    pod_security: Literal["baseline", "restricted"] = "baseline"
    """kubernetes: the Pod Security level enforced in sandbox namespaces."""
    kube_max_requests: int = Field(default=64, ge=1, le=1024)
    """kubernetes: API requests in flight at once (raise it to provision faster)."""
    start_baseline: bool = False
    """Start the catalog's baseline commands as child processes and stop them on exit."""
    with_router: bool = False
    """Run `sandboxd-router` as a child process wired to this control plane (restarted if it
    dies, stopped on exit): one command gives a laptop the whole system."""
    reaper_interval: float = Field(default=10.0, gt=0, le=3600)
    """Seconds between TTL sweeps (and full resyncs of the reconciler)."""
    default_ttl: int = 2 * 3600
    """TTL of a sandbox whose spec gives none (seconds; `2h` style accepted)."""
    max_ttl: int = 72 * 3600
    """The longest TTL a sandbox may have, at creation or when extended."""
    admin_token: SecretStr | None = None
    """The admin bearer token; generated into `<data dir>/admin-token` (0600) when not given."""
    view_key: SecretStr | None = None
    """The key that signs the web page's links and sign-in sessions (at least 32 characters);
    generated into `<data dir>/view-key` (0600) when not given. Give every replica the same
    one; changing it ends every link and session handed out."""
    public_url: str | None = None
    """The URL users reach the API at, for links; default http://host:port."""
    router_host: str = "127.0.0.1"
    """Host of the router's listeners, given to processes as SANDBOXD_SERVICE_<NAME>_URL."""
    router_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """`--with-router`: the router serves Prometheus metrics by sandbox and service
    (`GET /metrics`) on this port of `router_host`."""
    router_lease: float = Field(default=600.0, gt=0)
    """Seconds a router instance may stay silent (routers report at least every 30 s) before
    its fault counts are folded into the sandbox's and it no longer counts toward the 256
    instances kept; it is told so (409) if it reports again. Keep it well above 30 s: a
    shorter lease retires live routers (still exact, but each then takes a new id)."""
    health_timeout: float = Field(default=60.0, gt=0)
    """A fork that is not healthy this many seconds after it started fails the sandbox."""
    drain: float = Field(default=0.5, ge=0, le=60)
    """Seconds a deleted sandbox's forks keep running after its routes are withdrawn, and a
    replaced fork after its routes moved to the new copy."""
    stop_grace: float = Field(default=5.0, ge=0)
    """Seconds between SIGTERM and SIGKILL when stopping a process."""
    max_request_bytes: int = 256 * 1024
    """Largest request body the API reads; larger ones get 413."""
    workers: int = Field(default=8, ge=1, le=256)
    """Sandboxes the reconciler converges at once."""
    retry_base: float = Field(default=0.5, gt=0, le=3600)
    """Seconds before a failed reconcile of a sandbox is retried; doubled at each failure in
    a row, up to `retry_cap`, and reset by a success."""
    retry_cap: float = Field(default=60.0, gt=0, le=3600)
    """The longest wait between retries of a sandbox whose reconciles keep failing."""
    allow_unconfined_forks: bool = False
    """Run forks and baselines even where they cannot be confined (no user namespaces): they
    can then read the admin token. Off: `sandboxd serve` refuses to start there."""

    @field_validator("default_ttl", "max_ttl", mode="before")
    @classmethod
    def _duration(cls, value: object) -> int:
        if isinstance(value, str | int) and not isinstance(value, bool):
            return parse_duration(value)
        raise ValueError("a duration such as 2h")

    @field_validator("egress_allow", mode="after")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(cidr, strict=False)) for cidr in value]

    @field_validator("admin_token", mode="after")
    @classmethod
    def _blank_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("view_key", mode="after")
    @classmethod
    def _long_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if len(value.get_secret_value()) < MIN_KEY:
            raise ValueError(f"the view key must have at least {MIN_KEY} characters")
        return value

    @field_validator("host", mode="after")
    @classmethod
    def _loopback_unless_told(cls, host: str, info: ValidationInfo) -> str:
        if not info.data.get("insecure_listen") and not _is_loopback(host):
            raise ValueError(
                f"refusing to listen on {host!r}: the API is plain HTTP, so tokens would "
                "cross the network in clear, and a token runs commands. Listen on 127.0.0.1 "
                "(behind a TLS proxy), or pass --insecure-listen (SANDBOXD_INSECURE_LISTEN=1) "
                "where the network is private, such as a container or a cluster"
            )
        return host

    @property
    def data_path(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'sandboxd.db'}"

    @property
    def effective_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name may resolve anywhere
