"""The telemetry process's posts to the control plane: one at a time, on a kept-alive
connection (`connection.Connection`), in a worker thread, so a control plane that answers
slowly never stalls the loop that drains the ring.

TLS verifies against the system's certificate store (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured,
as OpenSSL does); no proxy is used, as by the router's own client (`control`).
"""

from __future__ import annotations

import asyncio
import http.client
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from sandboxd_router.telemetry.connection import Answer, Connection

__all__ = ["Answer", "PostError", "Poster"]


class PostError(Exception):
    """No answer: the connection failed, broke or timed out."""


class Poster:
    def __init__(self, url: str, headers: dict[str, str], timeout: float) -> None:
        self._connection = Connection(url)
        self.prefix = urlsplit(url).path.rstrip("/")
        self.headers = headers
        self.timeout = timeout
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="sandboxd-telemetry-post")

    async def post(self, path: str, content: bytes, content_type: str) -> Answer:
        """POST `content` to the URL's path + `path`; raises `PostError` when no answer came."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self._post, path, content, content_type)

    def close(self) -> None:
        """Let a post under way finish in its thread (bounded by `timeout`), then close."""
        self._worker.submit(self._connection.close)
        self._worker.shutdown(wait=False)

    def _post(self, path: str, content: bytes, content_type: str) -> Answer:
        headers = {**self.headers, "Content-Type": content_type}
        try:
            return self._connection.post(self.prefix + path, content, headers, self.timeout)
        except (OSError, http.client.HTTPException) as e:
            raise PostError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e
