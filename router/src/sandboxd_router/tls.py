"""The TLS settings of the router's httpx clients (the route watcher's, the reporter's).

httpx loads the CA store into a new context for every client: 1.3 MB of the router's memory
for the first, 0.8 MB for each one after. An https control plane's clients share one context
(httpx's own: certifi, or `SSL_CERT_FILE` / `SSL_CERT_DIR`); an http one's get a context
that loads nothing — they never speak TLS, and one that did would verify against no CA at
all, so fail.
"""

from __future__ import annotations

import functools
import ssl
from urllib.parse import urlsplit

import httpx


def context_for(url: str) -> ssl.SSLContext:
    if urlsplit(url).scheme.lower() == "https":
        return _verified()
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # (verifies, host names included)


@functools.cache
def _verified() -> ssl.SSLContext:
    return httpx.create_ssl_context()
