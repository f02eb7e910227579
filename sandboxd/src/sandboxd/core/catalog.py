"""The catalog (`sandboxd.yaml`): the baseline services the router fronts and sandboxes fork.

Loading is strict: a YAML that is not a mapping, an unknown field, two services with one name or
one router port, each gives a `CatalogError` that names the file, the field and the problem.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from sandboxd.core.documents import DocumentError, load_yaml
from sandboxd.core.errors import describe, one_line
from sandboxd.core.model import DnsLabel, Model
from sandboxd.core.spec import Env, HealthPath

MAX_CATALOG_BYTES = 1 << 20
_BAGGAGE_KEY = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")  # a W3C baggage key (token)


class CatalogError(Exception):
    """The catalog file cannot be used; the message says where and why."""


class Baseline(Model):
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=512)]
    command: list[str] | None = None
    env: Env = {}
    health: HealthPath | None = None


class KubernetesRef(Model):
    namespace: DnsLabel
    deployment: DnsLabel
    service: DnsLabel
    port: Annotated[int, Field(ge=1, le=65535)]


class Service(Model):
    name: DnsLabel
    protocol: Literal["http", "mcp"] = "http"
    router_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    baseline: Baseline
    kubernetes: KubernetesRef | None = None


class Catalog(Model):
    baggage_key: str = "sandbox"
    services: list[Service] = []

    @field_validator("baggage_key")
    @classmethod
    def _token(cls, value: str) -> str:
        if not _BAGGAGE_KEY.fullmatch(value):
            raise ValueError(f"{value!r} is not a W3C baggage key")
        return value

    @model_validator(mode="after")
    def _unique(self) -> Catalog:
        names = [s.name for s in self.services]
        ports = [str(s.router_port) for s in self.services if s.router_port is not None]
        for kind, values in (("name", names), ("routerPort", ports)):
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"two services share the {kind} {', '.join(dupes)}")
        return self

    def get(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)


def parse_catalog(text: str, *, source: str) -> Catalog:
    try:
        data = load_yaml(text)
    except DocumentError as e:
        raise CatalogError(f"{source}: {e}") from e
    except yaml.YAMLError as e:
        raise CatalogError(f"{source}: not valid YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CatalogError(f"{source}: the catalog must be a mapping with a 'services' list")
    try:
        return Catalog.model_validate(data)
    except ValidationError as e:
        raise CatalogError(f"{source}: {one_line(describe(e.errors()))}") from e


def load_catalog(path: Path) -> Catalog:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CatalogError(f"{path}: cannot read the catalog: {e.strerror}") from e
    if len(raw) > MAX_CATALOG_BYTES:
        raise CatalogError(f"{path}: larger than {MAX_CATALOG_BYTES} bytes")
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        raise CatalogError(f"{path}: not UTF-8 text") from e
    return parse_catalog(text, source=str(path))
