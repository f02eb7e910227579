"""Process hardening shared by the router and its telemetry process."""

from __future__ import annotations

import contextlib
import ctypes


def no_dumps() -> None:
    """Non-dumpable: a process of the same uid without CAP_SYS_PTRACE cannot open our /proc
    files (environ, mem, fd), where the token is."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
