"""The one place where errors become HTTP: JSON `{"error", "message", ...}`, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from sandboxd.api.deps import Unauthorized
from sandboxd.core.errors import describe, one_line
from sandboxd.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    SandboxdError,
    Unavailable,
)

log = logging.getLogger(__name__)

STATUS: dict[type[SandboxdError], int] = {
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    InvalidRequest: 422,
    Unavailable: 503,
}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: object,
) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    body = {"error": code, "message": message, **extra}
    return JSONResponse(body, status_code=status, headers=headers)


async def _sandboxd_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SandboxdError)
    status = next((s for t, s in STATUS.items() if isinstance(exc, t)), 500)
    extra = {k: v for k, v in exc.details.items() if k != "error"}
    code = str(exc.details.get("error", exc.code))
    return error_response(status, code, exc.message, **extra)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "malformed_json", "the request body is not valid JSON")
    problems = describe(errors)
    return error_response(422, "invalid_request", one_line(problems), problems=problems)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return _method_not_allowed(request)
    if exc.status_code == 400:  # FastAPI's only 400 here: a body its JSON parser gave up on
        return error_response(
            400,
            "malformed_json",
            "the request body cannot be read as JSON (nested too deeply, a number too long, "
            "or not JSON)",
        )
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _method_not_allowed(request: Request) -> JSONResponse:
    """405 with an `Allow` that lists every method some route answers on this path. Each method
    is tried against the routes' own matching: included routers hide their routes' `methods`."""
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.routes
        )
    ]
    allow = ", ".join(allowed)
    return error_response(405, "method_not_allowed", f"allowed: {allow}", headers={"Allow": allow})


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "internal", "internal error; the server log has the details")


def install(app: FastAPI) -> None:
    app.add_exception_handler(SandboxdError, _sandboxd_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
