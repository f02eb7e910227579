"""Process hardening and upkeep shared by the router and its telemetry process."""

from __future__ import annotations

import contextlib
import ctypes


def no_dumps() -> None:
    """Non-dumpable: a process of the same uid without CAP_SYS_PTRACE cannot open our /proc
    files (environ, mem, fd), where the token is."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE


_malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # (None: not glibc)


def trim_heap() -> None:
    """Give the system back the allocator's free pages (glibc): what a burst of requests used
    is freed but stays resident, kept by malloc, until trimmed."""
    if _malloc_trim is not None:
        _malloc_trim(0)
