"""A small async client for the Kubernetes REST API: get, list, server-side apply, delete.

Only what the runtime needs, over one pooled httpx client. Every failure becomes one of the
`errors` tree, chosen from the API's own `Status`, so callers can tell "not there" from
"forbidden" from "the server is down" and users read the apiserver's words, not a traceback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from sandboxd.runtime.kubernetes.config import Connection, KubeConfigError
from sandboxd.runtime.kubernetes.errors import KubeError, NotFound, Unreachable, from_status

Obj = dict[str, Any]
Items = list[Obj]
FIELD_MANAGER = "sandboxd"
_PLURALS = {
    "Namespace": "namespaces",
    "Service": "services",
    "ResourceQuota": "resourcequotas",
    "LimitRange": "limitranges",
    "Deployment": "deployments",
    "NetworkPolicy": "networkpolicies",
    "VirtualService": "virtualservices",
}
_JSON = "application/json"
_RETRIES = 3  # for 429 and 503 that say when to come back


def collection_path(api_version: str, kind: str, namespace: str | None = None) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    where = f"/namespaces/{namespace}" if namespace else ""
    return f"{prefix}{where}/{_PLURALS[kind]}"


def object_path(obj: Obj) -> str:
    meta = obj["metadata"]
    base = collection_path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
    return f"{base}/{meta['name']}"


class KubeClient:
    def __init__(
        self, connection: Connection, *, max_requests: int = 64, timeout: float = 30.0
    ) -> None:
        self._credentials = connection.credentials
        self._http = httpx.AsyncClient(
            base_url=connection.server,
            verify=connection.ssl_context,
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_requests, max_keepalive_connections=max_requests
            ),
            headers={"Accept": "application/json", "User-Agent": "sandboxd"},
            http2=True,  # one multiplexed connection (with TLS; plain http stays HTTP/1.1)
        )
        self._slots = asyncio.Semaphore(max_requests)

    async def close(self) -> None:
        await self._http.aclose()

    async def get(self, path: str) -> Obj | None:
        try:
            return await self._call("GET", path)
        except NotFound:
            return None

    async def list(self, path: str, *, selector: str | None = None) -> Items:
        return (await self.list_with_version(path, selector=selector))[0]

    async def apply(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        """Server-side apply as field manager `sandboxd`, taking over conflicting fields."""
        params = {"fieldManager": FIELD_MANAGER, "force": "true"}
        if dry_run:
            params["dryRun"] = "All"
        return await self._call(
            "PATCH",
            object_path(obj),
            params=params,
            content=json.dumps(obj, separators=(",", ":")),
            content_type="application/apply-patch+yaml",
        )

    async def list_with_version(
        self, path: str, *, selector: str | None = None
    ) -> tuple[Items, str]:
        """Every object (page by page) and the list's resourceVersion, to watch from."""
        items: Items = []
        params: dict[str, str] = {"limit": "500"}
        if selector:
            params["labelSelector"] = selector
        while True:
            page = await self._call("GET", path, params=params)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                return items, str(meta.get("resourceVersion", ""))
            params["continue"] = meta["continue"]

    async def watch(
        self, path: str, *, selector: str, resource_version: str, timeout: int = 300
    ) -> AsyncIterator[Obj]:
        """The watch events (`{"type", "object"}`) after `resource_version` until the server
        ends the watch; `Gone` when that version is too old."""
        params = {
            "watch": "1",
            "labelSelector": selector,
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout),
        }
        headers = await self._auth()
        try:
            async with self._http.stream(
                "GET",
                path,
                params=params,
                headers=headers,
                timeout=httpx.Timeout(30, read=timeout + 30),
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise _error(response, "GET", path)
                async for line in response.aiter_lines():
                    if line:
                        event = json.loads(line)
                        if event.get("type") == "ERROR":
                            status = event.get("object") or {}
                            raise from_status(int(status.get("code") or 500), status)
                        yield event
        except httpx.HTTPError as e:
            raise Unreachable(f"watch {path}: {type(e).__name__}: {e}") from e

    async def write(self, obj: Obj, *, create: bool) -> Obj:
        """Create, or replace guarded by the object's `metadata.resourceVersion` (409 when the
        object changed since it was read)."""
        body = json.dumps(obj, separators=(",", ":"))
        if create:
            collection = object_path(obj).rsplit("/", 1)[0]
            return await self._call("POST", collection, content=body, content_type=_JSON)
        return await self._call("PUT", object_path(obj), content=body, content_type=_JSON)

    async def delete(
        self, path: str, *, propagation: str = "Background", resource_version: str | None = None
    ) -> bool:
        """Ask for the object's deletion; False when it was not there. With `resource_version`,
        only that version is deleted (409 when it changed since)."""
        options: Obj = {"kind": "DeleteOptions", "propagationPolicy": propagation}
        if resource_version is not None:
            options["preconditions"] = {"resourceVersion": resource_version}
        body = json.dumps(options)
        try:
            await self._call("DELETE", path, content=body, content_type="application/json")
        except NotFound:
            return False
        return True

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        content: str | None = None,
        content_type: str | None = None,
    ) -> Obj:
        for attempt in range(_RETRIES + 1):
            response = await self._send(method, path, params, content, content_type)
            if response.status_code == 401 and attempt == 0:
                self._credentials.expire()  # a rotated or expired token: fetch it again
                continue
            if response.status_code in (429, 503) and attempt < _RETRIES:
                await asyncio.sleep(_retry_after(response))
                continue
            break
        if response.is_success:
            return dict(response.json()) if response.content else {}
        raise _error(response, method, path)

    async def _auth(self) -> dict[str, str]:
        credentials = self._credentials
        try:  # a credential plugin may take seconds: never on the event loop
            stale = credentials.stale
            auth = await asyncio.to_thread(credentials.header) if stale else credentials.header()
        except KubeConfigError as e:
            raise KubeError("Unauthorized", str(e), code=401) from e
        return {"Authorization": auth} if auth else {}

    async def _send(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        content: str | None,
        content_type: str | None,
    ) -> httpx.Response:
        headers = await self._auth()
        if content_type:
            headers["Content-Type"] = content_type
        async with self._slots:
            try:
                return await self._http.request(
                    method, path, params=params, content=content, headers=headers
                )
            except httpx.HTTPError as e:
                raise Unreachable(f"{method} {path}: {type(e).__name__}: {e}".rstrip(": ")) from e


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(2.0, max(0.05, float(response.headers.get("Retry-After", "0.2"))))
    except ValueError:
        return 0.2


def _error(response: httpx.Response, method: str, path: str) -> KubeError:
    code, phrase = response.status_code, response.reason_phrase
    try:
        status = response.json()
    except ValueError:
        status = None
    if not isinstance(status, dict):  # not the API's Status: a proxy's page, say
        status = {"message": f"{method} {path}: {response.text.strip()[:300]}"}
    return from_status(code, status, reason=phrase.replace(" ", "") or "Error")
