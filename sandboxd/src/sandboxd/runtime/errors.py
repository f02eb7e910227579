"""What a runtime raises when it cannot converge a sandbox, and whether trying again can help.

    ReconcileError
    ├── TemporaryError   the world may change (an API unreachable, a conflict, a namespace
    │                    still being deleted): the reconciler tries again, backing off
    └── PermanentError   the same request will be refused again (the API rejects a rendered
                         object): the reconciler fails the sandbox once, with `reason`

Any other exception from a runtime is a bug or a surprise: retried like a temporary error,
with its traceback logged. Both the runtimes and the reconciler import this module; it imports
nothing of sandboxd.

`RuntimeUnavailable` is apart: the runtime cannot be used at all (`sandboxd serve` stops).
"""

from __future__ import annotations


class ReconcileError(Exception):
    """A reconcile that could not finish; `str(error)` says why, in one line."""


class TemporaryError(ReconcileError):
    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay
        """Seconds to wait before the next try; None leaves it to the work queue's backoff."""


class PermanentError(ReconcileError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        """A CamelCase word, the sandbox's `reason` once it has failed."""
        self.message = message


class RuntimeUnavailable(Exception):
    """The runtime cannot be reached or configured; the message says why, in one line."""
