"""The control plane's error tree, mapped to HTTP in exactly one place (`sandboxd.api.errors`).

SandboxdError
├── Forbidden           403  the token may not do that (a scoped token out of its scope)
├── NotFound            404  the name was never seen
├── Conflict            409  same name, other spec; or the sandbox is being deleted
├── InvalidRequest      422  valid JSON, but not a spec we can honour (unknown service, TTL cap)
└── Unavailable         503  the database cannot be reached
"""

from __future__ import annotations

from typing import Any


class SandboxdError(Exception):
    code = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Forbidden(SandboxdError):
    code = "forbidden"


class NotFound(SandboxdError):
    code = "not_found"


class Conflict(SandboxdError):
    code = "conflict"


class InvalidRequest(SandboxdError):
    code = "invalid_request"


class Unavailable(SandboxdError):
    code = "unavailable"
