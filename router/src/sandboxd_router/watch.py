"""Where route tables come from: the control plane's long poll, or a static file."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from sandboxd_router.control import ControlClient, ControlError
from sandboxd_router.faults import FaultBook
from sandboxd_router.table import Table, TableError, UpstreamRegistry, parse_table

log = logging.getLogger("sandboxd_router")
OnTable = Callable[[Table], Awaitable[None]]
WAIT = 30


async def watch_control_plane(
    *,
    url: str,
    token: str,
    upstreams: UpstreamRegistry,
    on_table: OnTable,
    faults: FaultBook | None = None,
) -> None:
    """Long-poll `GET /v1/routes`; apply each new table; keep the last one while the control
    plane is unreachable, retrying with a capped backoff."""
    etag: str | None = None
    table: Table | None = None
    backoff = 0.2
    headers = {"Authorization": f"Bearer {token}"}
    async with ControlClient(url, headers=headers, timeout=WAIT + 10, connect_timeout=5) as client:
        while True:
            try:
                extra = {"If-None-Match": etag} if etag else {}
                # with a table held, the changes to it are enough (the whole when the control
                # plane no longer knows it, or is older and sends the whole anyway)
                params: dict[str, str | int] = {"wait": WAIT}
                if table is not None:
                    params["delta"] = "true"
                response = await client.get("/v1/routes", params=params, headers=extra)
                if response.status == 304:
                    continue
                if not response.ok:
                    raise ControlError(f"HTTP {response.status}: {response.text[:200]}")
                table = parse_table(
                    response.body, upstreams=upstreams, faults=faults, previous=table
                )
                await on_table(table)
                etag = response.headers.get("etag")
                backoff = 0.2
            except TableError as e:  # the whole next time, at once
                log.warning("route table from %s unusable (%s); fetching it whole", url, e)
                etag, table = None, None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except ControlError as e:
                if etag is None:  # starting (often beside a control plane that is starting too)
                    log.info("waiting for the route table from %s (%s)", url, e)
                    await asyncio.sleep(0.1)
                    continue
                log.warning("route table from %s unavailable (%s); keeping the last one", url, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)


async def load_file(
    path: Path, *, upstreams: UpstreamRegistry, on_table: OnTable, faults: FaultBook | None = None
) -> None:
    raw = await asyncio.to_thread(Path.read_bytes, path)
    await on_table(parse_table(raw, upstreams=upstreams, faults=faults))
