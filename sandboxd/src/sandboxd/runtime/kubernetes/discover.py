"""The catalog from the cluster: baseline Services labelled `sandboxd.dev/service=<name>`.

Annotations on the Service say the rest (all optional):
  sandboxd.dev/protocol     http (default) or mcp
  sandboxd.dev/port         the port the router sends to (default: the Service's first port)
  sandboxd.dev/deployment   the baseline Deployment forks copy (default: the Service's name)
  sandboxd.dev/router-port  the router's listener for it in local (non-gateway) mode
Pure: a list of Service objects in, catalog services and one message per unusable one out.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from sandboxd.core.catalog import Catalog, Service
from sandboxd.core.errors import describe, one_line
from sandboxd.runtime.kubernetes.render import SANDBOX, SERVICE

# forks' own Services carry the service label too, and also the sandbox's: those are not baselines
SELECTOR = f"{SERVICE},!{SANDBOX}"
_ANNOTATION = "sandboxd.dev/"


def catalog_services(objects: list[dict[str, Any]]) -> tuple[list[Service], list[str]]:
    services: list[Service] = []
    problems: list[str] = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        where = f"Service {meta.get('namespace')}/{meta.get('name')}"
        try:
            services.append(_service(obj))
        except (ValueError, KeyError) as e:
            detail = one_line(describe(e.errors())) if isinstance(e, ValidationError) else str(e)
            problems.append(f"{where}: {detail}")
    return services, problems


def merge(catalog: Catalog, discovered: list[Service]) -> tuple[Catalog, list[str]]:
    """The file's services win over discovered ones of the same name (the file is explicit)."""
    names = {s.name for s in catalog.services}
    added = [s for s in discovered if s.name not in names]
    skipped = [
        f"service {s.name!r} is in the catalog file; its cluster Service is ignored"
        for s in discovered
        if s.name in names
    ]
    merged = Catalog.model_validate(
        {**catalog.model_dump(by_alias=True), "services": [*catalog.services, *added]}
    )
    return merged, skipped


def _service(obj: dict[str, Any]) -> Service:
    meta = obj["metadata"]
    notes = meta.get("annotations") or {}
    ports = (obj.get("spec") or {}).get("ports") or []
    if not ports:
        raise ValueError("has no ports")
    port = int(notes.get(_ANNOTATION + "port") or ports[0]["port"])
    if port not in {p.get("port") for p in ports}:
        raise ValueError(f"annotation {_ANNOTATION}port: {port} is not one of the Service's ports")
    namespace, name = meta["namespace"], meta["name"]
    router_port = notes.get(_ANNOTATION + "router-port")
    return Service.model_validate(
        {
            "name": meta["labels"][SERVICE],
            "protocol": notes.get(_ANNOTATION + "protocol", "http"),
            "routerPort": int(router_port) if router_port else None,
            "baseline": {"url": f"http://{name}.{namespace}.svc.cluster.local:{port}"},
            "kubernetes": {
                "namespace": namespace,
                "deployment": notes.get(_ANNOTATION + "deployment", name),
                "service": name,
                "port": port,
            },
        }
    )
