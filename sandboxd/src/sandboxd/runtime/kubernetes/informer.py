"""The fork Deployments, kept current in memory by list + watch (an informer, in client-go terms).

A reconcile reads a fork's status from here instead of asking the API, and every change to a
fork Deployment calls `on_change(sandbox)`, so a fork that becomes available is noticed at
once rather than at the next poll. When the watch breaks, it lists again and resumes;
`synced` is clear until the first list has arrived.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sandboxd.runtime.kubernetes import render
from sandboxd.runtime.kubernetes.client import KubeClient, Obj
from sandboxd.runtime.kubernetes.errors import Gone, KubeError

log = logging.getLogger(__name__)
PATH = "/apis/apps/v1/deployments"
SELECTOR = f"{render.MANAGED},{render.SANDBOX}"
RETRY = 1.0  # seconds between attempts while the API cannot be reached


class DeploymentInformer:
    def __init__(self, client: KubeClient, on_change: Callable[[str], None]) -> None:
        self._client = client
        self._on_change = on_change
        self._objects: dict[tuple[str, str], Obj] = {}
        self.synced = asyncio.Event()

    def get(self, namespace: str, name: str) -> Obj | None:
        return self._objects.get((namespace, name))

    def put(self, obj: Obj) -> None:
        """What a write returned: newer than anything the watch has told so far, or equal."""
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if _version(obj) >= _version(self._objects.get(key)):
            self._objects[key] = obj

    def forget(self, namespace: str) -> None:
        for key in [k for k in self._objects if k[0] == namespace]:
            del self._objects[key]

    async def run(self) -> None:
        while True:
            try:
                items, version = await self._client.list_with_version(PATH, selector=SELECTOR)
                self._replace(items)
                self.synced.set()
                while True:
                    opened, events = time.monotonic(), 0
                    async for event in self._client.watch(
                        PATH, selector=SELECTOR, resource_version=version
                    ):
                        events += 1
                        version = self._apply(event) or version
                    if not events and time.monotonic() - opened < RETRY:
                        await asyncio.sleep(RETRY)  # a server (or proxy) ending watches at once
            except Gone:
                pass  # our version is too old to resume from: list again
            except KubeError as e:
                log.warning("watching fork Deployments: %s; retrying", e)
                await asyncio.sleep(RETRY)
            except Exception:  # never die quietly: a stale cache would fail healthy forks
                log.exception("watching fork Deployments failed; listing again")
                await asyncio.sleep(RETRY)

    def _replace(self, items: list[Obj]) -> None:
        before = self._objects
        self._objects = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in items}
        for key in before.keys() | self._objects.keys():
            if before.get(key) != self._objects.get(key):
                self._tell(self._objects.get(key) or before[key])

    def _apply(self, event: Obj) -> str | None:
        kind, obj = event.get("type"), event.get("object") or {}
        meta = obj.get("metadata") or {}
        if kind == "BOOKMARK":
            return meta.get("resourceVersion")
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if kind == "DELETED":
            self._objects.pop(key, None)
        elif kind in ("ADDED", "MODIFIED"):
            self._objects[key] = obj
        else:
            return None
        self._tell(obj)
        return meta.get("resourceVersion")

    def _tell(self, obj: Obj) -> None:
        sandbox = (obj["metadata"].get("labels") or {}).get(render.SANDBOX)
        if sandbox:
            self._on_change(sandbox)


def _version(obj: Obj | None) -> int:
    """etcd's revision behind a resourceVersion; opaque by contract, an integer in practice."""
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion", 0))
    except ValueError:
        return 0
