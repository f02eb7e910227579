"""The one module that speaks HTTP to sandboxd; httpx's errors and HTTP statuses end here.

Every method returns the API's JSON objects unchanged (`Json`), so `-o json` can print exactly
what the server said. Failures become the `sandboxd_cli.errors` tree: transport errors are
`Unreachable`, and each status maps to one class (see `_raise_for`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from sandboxd_cli.config import Connection
from sandboxd_cli.errors import (
    BadInput,
    CliError,
    Conflict,
    NotAuthorised,
    NotFound,
    Unreachable,
)

Json = dict[str, Any]
DEFAULT_TIMEOUT = 15.0
OFFSET_HEADER = "Sandboxd-Log-Offset"


@dataclass(frozen=True)
class LogChunk:
    data: bytes
    next_offset: int
    """Where the next read should start (`Sandboxd-Log-Offset`)."""


class Api:
    """A small synchronous client of the sandboxd REST API (v1)."""

    def __init__(
        self,
        *,
        connection: Connection,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": "sandboxd-cli"}
        if connection.token:
            headers["Authorization"] = f"Bearer {connection.token}"
        self.url = connection.url
        self._http = httpx.Client(
            base_url=connection.url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def create(self, spec: Json) -> Json:
        return self._json("POST", "/v1/sandboxes", json=spec, what=_sandbox(spec.get("name")))

    def apply(self, spec: Json) -> Json:
        """Create the sandbox, or update it in place to `spec` (`PUT`)."""
        name = str(spec.get("name"))
        return self._json("PUT", f"/v1/sandboxes/{_seg(name)}", json=spec, what=_sandbox(name))

    def get(self, name: str) -> Json:
        return self._json("GET", f"/v1/sandboxes/{_seg(name)}", what=_sandbox(name))

    def sandboxes(self, *, labels: Sequence[str] = ()) -> Json:
        params = [("label", label) for label in labels]
        return self._json("GET", "/v1/sandboxes", params=params, what="sandboxes")

    def patch(self, name: str, body: Json) -> Json:
        return self._json("PATCH", f"/v1/sandboxes/{_seg(name)}", json=body, what=_sandbox(name))

    def delete(self, name: str) -> Json:
        return self._json("DELETE", f"/v1/sandboxes/{_seg(name)}", what=_sandbox(name))

    def events(self, name: str) -> Json:
        return self._json("GET", f"/v1/sandboxes/{_seg(name)}/events", what=_sandbox(name))

    def metrics(self, name: str, params: Mapping[str, str]) -> Json:
        path = f"/v1/sandboxes/{_seg(name)}/metrics"
        return self._json("GET", path, params=params, what=_sandbox(name))

    def requests(self, name: str, params: Mapping[str, str]) -> Json:
        path = f"/v1/sandboxes/{_seg(name)}/requests"
        return self._json("GET", path, params=params, what=_sandbox(name))

    def traces(self, name: str, params: Mapping[str, str]) -> Json:
        path = f"/v1/sandboxes/{_seg(name)}/traces"
        return self._json("GET", path, params=params, what=_sandbox(name))

    def services(self) -> Json:
        return self._json("GET", "/v1/services", what="services")

    def logs(
        self, name: str, service: str, *, tail: int | None = None, offset: int = 0
    ) -> LogChunk:
        """The last `tail` lines, or (tail None) the bytes from `offset`."""
        params = {"tail": tail} if tail is not None else {"offset": offset}
        path = f"/v1/sandboxes/{_seg(name)}/logs/{_seg(service)}"
        response = self._send("GET", path, params=params, what=None)
        data = response.content
        next_offset = _int(response.headers.get(OFFSET_HEADER), default=offset + len(data))
        return LogChunk(data=data, next_offset=next_offset)

    def _json(self, method: str, path: str, *, what: str, **kwargs: Any) -> Json:
        response = self._send(method, path, what=what, **kwargs)
        body = _body(response)
        if body is None:
            raise CliError(f"sandboxd answered {method} {path} with something other than JSON")
        return body

    def _send(self, method: str, path: str, *, what: str | None, **kwargs: Any) -> httpx.Response:
        with self._translated():
            response = self._http.request(method, path, **kwargs)
        if response.is_error:
            _raise_for(response, what=what)
        return response

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError as e:
            reason = "connection refused" if "refused" in str(e).lower() else str(e) or "no route"
            raise Unreachable(
                f"cannot reach sandboxd at {self.url}: {reason} — is `sandboxd serve` running?"
            ) from e
        except httpx.TimeoutException as e:
            raise Unreachable(f"sandboxd at {self.url} did not answer in time") from e
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
            raise BadInput(f"{self.url} is not a usable sandboxd URL: {e}") from e
        except httpx.HTTPError as e:
            raise Unreachable(f"cannot talk to sandboxd at {self.url}: {e}") from e


def _seg(value: str) -> str:
    """One path segment: a name typed as `a/b` or `x?y` must not change the URL's shape."""
    return quote(value, safe="")


def _sandbox(name: object) -> str:
    return f"sandbox {name}" if name else "the sandbox"


def _int(value: str | None, *, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _body(response: httpx.Response) -> Json | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def problems(body: Mapping[str, Any]) -> list[str]:
    """The 422 `problems` list as `field: problem` lines."""
    items = body.get("problems")
    if not isinstance(items, list):
        return []
    return [
        f"{item.get('field', '?')}: {item.get('problem', '?')}"
        for item in items
        if isinstance(item, dict)
    ]


def _raise_for(response: httpx.Response, *, what: str | None) -> None:
    """Raise the error for a failed response; `what` names the missing thing in a 404 (else the
    server's own message, which is more precise, e.g. for a fork without a log)."""
    body = _body(response) or {}
    message = str(body.get("message") or response.reason_phrase or "error")
    status = response.status_code
    if status in (401, 403):
        raise NotAuthorised(
            f"not authorised: set SANDBOXD_TOKEN (or --token) to a valid sandboxd token ({message})"
        )
    if status == 404:
        raise NotFound(f"{what} not found" if what else message)
    if status == 409:
        raise Conflict(message)
    if status in (400, 413, 422):
        details = problems(body)
        raise BadInput(message, details=[] if details == [message] else details)
    raise CliError(f"sandboxd answered {status}: {message}")
