"""Refusals of a client's request, raised inside the parser's callbacks.

`Refusal` is an `httptools.HttpParserError`, so llhttp stops parsing where it is raised; the
connection answers it with its status and JSON `error` code (`DownstreamConnection.reject`), in
the request's turn. Kept out of the compiled modules: mypyc classes cannot derive from
httptools' exception.
"""

from __future__ import annotations

import httptools


class Refusal(httptools.HttpParserError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
