"""The TLS settings of the router's client of the control plane (`control.ControlClient`).

An https control plane: the system's certificate store (`SSL_CERT_FILE` / `SSL_CERT_DIR`
honoured, as OpenSSL does), loaded once for the watcher and the reporter together. An http
one: no context at all (building one costs the router 0.4 MB, for nothing).
"""

from __future__ import annotations

import functools
import ssl
from urllib.parse import urlsplit


def context_for(url: str) -> ssl.SSLContext | None:
    if urlsplit(url).scheme.lower() == "https":
        return _verified()
    return None


@functools.cache
def _verified() -> ssl.SSLContext:
    return ssl.create_default_context()
