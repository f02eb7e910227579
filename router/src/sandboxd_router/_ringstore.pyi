"""The request record's plain case, in C (`_ringstore.c`; `record.Recorder` uses it)."""

import mmap

LAYOUT: tuple[int, ...]
"""The constants the C was written for: `record.HEADER`, `SLOT`, `DONE_AT`, the shape's
offset and size, the traceparent's length offset and size, the target's length offset and
`PATH`."""

class Store:
    wall: float
    """Wall-clock time minus the monotonic clock (`Recorder._wall`)."""

    def __init__(self, ring: mmap.mmap, slots: int) -> None: ...
    def plain(
        self,
        seq: int,
        started: float,
        bytes_in: int,
        bytes_out: int,
        shape: bytes,
        traceparent: bytes | None,
        target: bytes,
        /,
    ) -> None: ...
    def release(self) -> None: ...
