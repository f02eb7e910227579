"""Corking: what one read makes us write leaves in one write (one syscall, one TCP segment).

A response's head, body and end usually arrive in one upstream read; a request's head and
body in one client read. Writes made while corked are collected and sent together on uncork.
"""

from __future__ import annotations

import asyncio


class Corkable:
    transport: asyncio.Transport | None
    _out: list[bytes] | None

    def writable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        """Send (or collect, while corked) unless the connection is going: whoever closed it
        reports that."""
        if self._out is not None:
            self._out.append(data)
        elif self.writable():
            assert self.transport is not None
            self.transport.write(data)

    def cork(self) -> bool:
        """Start collecting; True if this call corked (so it is the one to uncork)."""
        if self._out is not None:
            return False
        self._out = []
        return True

    def uncork(self) -> None:
        out, self._out = self._out, None
        if out and self.writable():
            assert self.transport is not None
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
