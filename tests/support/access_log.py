"""The router's access log as tests read it.

The router writes its access log in batches off the request path, flushed by a timer, so a
request's line appears a moment after its response: tests wait for the line itself
(`poll.until(lambda: entries(...))`), never for a time longer than the flush. A read can catch
a batch half-written, so a line that has no newline yet is not read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def entries(path: Path, *, trace_id: str | None = None) -> list[dict[str, Any]]:
    """The complete lines logged so far, parsed; only `trace_id`'s when given."""
    text = path.read_text() if path.exists() else ""
    complete = text[: text.rfind("\n") + 1]
    parsed = [json.loads(line) for line in complete.splitlines()]
    return [e for e in parsed if trace_id is None or e.get("traceId") == trace_id]
