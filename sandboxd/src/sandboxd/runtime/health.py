"""Readiness probes: an HTTP GET that answers below 400, or a TCP port that accepts.

Written on raw asyncio streams: one short-lived connection per probe, no client pool to tune.
"""

from __future__ import annotations

import asyncio
import contextlib


async def probe(host: str, port: int, path: str | None, *, timeout: float = 1.0) -> bool:
    try:
        return await asyncio.wait_for(_probe(host, port, path), timeout)
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
        return False


async def _probe(host: str, port: int, path: str | None) -> bool:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if path is None:
            return True
        request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.split(b" ", 2)
        return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and int(parts[1]) < 400
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
