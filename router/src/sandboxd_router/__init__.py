"""sandboxd's data plane: the baggage-routing proxy."""

from sandboxd_router import native as _native

_native.select()  # compiled hot path, or its sources when the build is missing or stale
