"""sandboxd's data plane: the baggage-routing proxy."""

import sys

from sandboxd_router import native as _native

# httpx imports its command-line client (click, rich, pygments: 5 MB of the router's memory)
# whenever those are installed, as sandboxd's CLI installs them; no router process runs it.
# None in sys.modules makes that import fail, which httpx expects (then `httpx.main` only says
# how to install it). Done before any of the router's modules imports httpx.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

_native.select()  # compiled hot path, or its sources when the build is missing or stale
