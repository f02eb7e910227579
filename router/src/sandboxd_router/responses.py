"""What the router itself says to a client: canned responses, written without an exchange."""

from __future__ import annotations

from http import HTTPStatus

OVERLOADED_BODY = (
    b'{"error": "overloaded", "message": "the router holds as many connections as it may; '
    b'retry shortly", "sandbox": null, "service": null}'
)
OVERLOADED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nsandboxd-route: baseline\r\n"
    b"Connection: close\r\n\r\n%b" % (len(OVERLOADED_BODY), OVERLOADED_BODY)
)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def error(status: int, body: bytes, *, route: bytes) -> bytes:
    """The router's own JSON error response; the connection closes after it."""
    phrase = HTTPStatus(status).phrase.encode()
    return (
        b"HTTP/1.1 %d %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"sandboxd-route: %b\r\nConnection: close\r\n\r\n%b"
        % (status, phrase, len(body), route, body)
    )
