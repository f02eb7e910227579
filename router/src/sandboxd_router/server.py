"""The router process: listeners per service port (and the gateway), table swaps, admin port."""

from __future__ import annotations

import asyncio
import gc
import json
import logging

from sandboxd_router import native
from sandboxd_router.child import TelemetryProcess
from sandboxd_router.downstream import DownstreamConnection
from sandboxd_router.faults import FaultBook
from sandboxd_router.state import RouterState
from sandboxd_router.table import Table, UpstreamRegistry

log = logging.getLogger("sandboxd_router")


class Router:
    def __init__(
        self,
        *,
        state: RouterState,
        host: str,
        gateway_port: int | None,
        telemetry: TelemetryProcess | None = None,
    ) -> None:
        self.state = state
        self.telemetry = telemetry
        """The process that reads the request records (None: recording is off)."""
        self.host = host
        self.gateway_port = gateway_port
        self.upstreams = UpstreamRegistry()
        self.faults = FaultBook()
        """Every fault's counters, kept across tables (`FaultBook.snapshot()` reads them)."""
        self.listeners: dict[int | None, asyncio.Server] = {}
        self.unbound: dict[int | None, str] = {}
        """Ports the table wants that could not be bound yet (tried again every second)."""
        self.ready = asyncio.Event()

    async def apply(self, table: Table) -> None:
        """Swap in a new table (one reference assignment: requests see the old or the new)."""
        old, self.state.table = self.state.table, table
        recorder = self.state.recorder
        if recorder is not None:  # the telemetry process drops a deleted sandbox's series
            for key, route in old.routes.items():
                if key not in table.routes or table.routes[key].sandbox != route.sandbox:
                    recorder.gone(route.sandbox, key)
        for gone in self.upstreams.retain(table):
            gone.close_idle()
        live = {id(s.baseline) for s in table.services.values()}
        live |= {id(u) for r in table.routes.values() for u in r.forks.values()}
        self.state.sessions.keep_only(live)
        # A table of 100,000 routes is a few hundred thousand objects that never form cycles:
        # take them out of the cyclic collector's view, so its passes stay as cheap as with ten.
        gc.collect()
        gc.freeze()
        await self._listen(table)
        self.ready.set()
        log.info(
            "route table %s: %d services, %d sandboxes",
            table.version,
            len(table.services),
            len(table.routes),
        )

    async def _listen(self, table: Table) -> None:
        wanted: set[int | None] = set(table.by_port)
        if self.gateway_port is not None:
            wanted.add(None)
        for port in list(self.listeners):
            if port not in wanted:
                self.listeners.pop(port).close()
        for port in list(self.unbound):
            if port not in wanted:
                del self.unbound[port]
        loop = asyncio.get_running_loop()
        for port in wanted - set(self.listeners):
            bind = self.gateway_port if port is None else port
            try:
                self.listeners[port] = await loop.create_server(
                    lambda port=port: DownstreamConnection(self.state, port=port),
                    self.host,
                    bind,
                    reuse_address=True,
                    backlog=1024,
                )
                log.info(
                    "listening on %s:%s%s", self.host, bind, " (gateway)" if port is None else ""
                )
                self.unbound.pop(port, None)
            except OSError as e:
                if port not in self.unbound:  # once, not every second
                    log.error(
                        "cannot listen on %s:%s: %s (retried every second)",
                        self.host,
                        bind,
                        e.strerror,
                    )
                self.unbound[port] = str(e.strerror)

    async def sweep(self) -> None:
        """Once a second: idle client connections and upstreams past their deadline, the
        ports that could not be bound (another process held one for a while), and the
        telemetry process (started again if it died)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            for conn in list(self.state.connections):
                conn.tick(now)
            if self.unbound and self.ready.is_set():
                await self._listen(self.state.table)
            if self.telemetry is not None:
                self.telemetry.check()
                self.telemetry.recorder.flush()

    def close(self) -> None:
        for server in self.listeners.values():
            server.close()
        self.listeners.clear()

    async def stop_telemetry(self) -> None:
        """Last: the telemetry process writes the records of every request answered so far."""
        if self.telemetry is not None:
            await self.telemetry.stop()


async def serve_admin(router: Router, host: str, port: int) -> asyncio.Server:
    """`GET /healthz` on a separate port: the table version and size, once there is a table."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            table = router.state.table
            ok = router.ready.is_set()
            body = json.dumps(
                {
                    "status": "ok" if ok else "waiting for a route table",
                    "version": table.version,
                    "services": len(table.services),
                    "sandboxes": len(table.routes),
                    "sessions": len(router.state.sessions),
                    "connections": len(router.state.connections),
                    "heldBodyBytes": router.state.held_body,
                    "hotPath": native.mode,
                    "notListening": {
                        str(router.gateway_port if port is None else port): why
                        for port, why in router.unbound.items()
                    },
                }
            ).encode()
            status = b"200 OK" if ok else b"503 Service Unavailable"
            writer.write(
                b"HTTP/1.1 %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%b" % (status, len(body), body)
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
