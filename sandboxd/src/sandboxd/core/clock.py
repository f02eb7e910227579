"""Time as sandboxd keeps it (naive UTC: SQLite keeps no zone) and shows it (RFC 3339, `Z`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def rfc3339(
    moment: datetime, *, timespec: Literal["seconds", "milliseconds"] = "milliseconds"
) -> str:
    """`2026-11-22T08:00:00.000Z`. A naive `moment` is UTC already; an aware one is converted.
    The API shows milliseconds; Kubernetes annotations take whole seconds."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=timespec) + "Z"
