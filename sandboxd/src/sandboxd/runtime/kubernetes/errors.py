"""The Kubernetes API's errors: one class per way a caller handles them, chosen from the
API's own `Status` (its `reason`, and its `details.causes`), never from a message's words.

    KubeError                   any other failure (401, 5xx, 429 after the client's retries)
    ├── Unreachable             no answer: refused, reset, TLS, timed out
    ├── NotFound                404 NotFound
    ├── Conflict                409 Conflict: the object changed since it was read
    │   └── AlreadyExists       409 AlreadyExists
    ├── Gone                    410 Gone, or a watch's Expired: that resourceVersion is too old
    ├── Forbidden               403 Forbidden: RBAC or an admission plugin refuses
    │   └── NamespaceTerminating    ... because the namespace is being deleted (a cause says so)
    └── Invalid                 422 Invalid or 400 BadRequest: the object itself is refused

`str(error)` is the apiserver's reason and message, for people to read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Cause:
    """One `details.causes` entry: what is wrong (`reason`, e.g. FieldValueInvalid) and where."""

    reason: str
    message: str
    field: str


class KubeError(Exception):
    def __init__(
        self, reason: str, message: str, *, code: int | None = None, causes: tuple[Cause, ...] = ()
    ) -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message
        self.code = code
        """The HTTP status, for people to read; None when no answer came."""
        self.causes = causes


class Unreachable(KubeError):
    def __init__(self, message: str) -> None:
        super().__init__("Unreachable", message)


class NotFound(KubeError): ...


class Conflict(KubeError): ...


class AlreadyExists(Conflict): ...


class Gone(KubeError): ...


class Forbidden(KubeError): ...


class NamespaceTerminating(Forbidden):
    """Nothing new may be created in a namespace being deleted; it will be gone soon."""


class Invalid(KubeError): ...


_BY_REASON: dict[str, type[KubeError]] = {
    "NotFound": NotFound,
    "Conflict": Conflict,
    "AlreadyExists": AlreadyExists,
    "Gone": Gone,
    "Expired": Gone,
    "Forbidden": Forbidden,
    "Invalid": Invalid,
    "BadRequest": Invalid,
}
_BY_CODE: dict[int, type[KubeError]] = {
    400: Invalid,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
}
TERMINATING_CAUSE = "NamespaceTerminating"  # metav1.NamespaceTerminatingCause


def from_status(code: int, status: dict[str, Any], *, reason: str = "Error") -> KubeError:
    """The error a `Status` body (or an ERROR watch event's object) stands for; `code` is the
    HTTP status, used only when the body has no reason we know; `reason` when it has none."""
    said = str(status.get("reason") or "")
    details = status.get("details")
    causes = tuple(
        Cause(str(c.get("reason") or ""), str(c.get("message") or ""), str(c.get("field") or ""))
        for c in ((details if isinstance(details, dict) else {}).get("causes") or [])
        if isinstance(c, dict)
    )
    kind = _BY_REASON.get(said) or _BY_CODE.get(code, KubeError)
    if issubclass(kind, Forbidden) and any(c.reason == TERMINATING_CAUSE for c in causes):
        kind = NamespaceTerminating
    message = str(status.get("message") or "")
    return kind(said or reason, message, code=code, causes=causes)
