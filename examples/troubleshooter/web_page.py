"""The agent's web page: `GET /` says which build of the agent served it, and its "Diagnose"
button asks this agent's API from the browser (`page.js`, same origin).

It is what a preview link is for. Behind the router, a browser that opened a sandbox's preview
link for the agent gets the sandbox's agent for the page and for the page's own `fetch()`es,
and that agent's tool calls stay in the sandbox (the router adds the sandbox's key to the
`baggage` it forwards). A browser without the link gets the baseline on the same URL.

Everything comes from the agent itself (no CDN, no inline script: a strict
Content-Security-Policy); the build's facts are fixed at start and escaped once.
"""

from __future__ import annotations

import html
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

SCRIPT = Path(__file__).with_name("page.js")
CSP = (
    "default-src 'none'; script-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
# Named by the page: without it a browser asks /favicon.ico and gets a 404.
ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<circle cx="8" cy="8" r="7" fill="#2a7"/></svg>'
)
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Troubleshooter agent ({prompt_version}, {sandbox})</title>
<link rel="icon" href="/icon.svg" type="image/svg+xml">
<script src="/page.js" defer></script>
</head>
<body>
<main>
<h1>Troubleshooter agent</h1>
<p id="build" data-prompt-version="{prompt_version}" data-sandbox="{sandbox}">This page was
served by the agent with prompt version <strong>{prompt_version}</strong> and model
<strong>{model_version}</strong>, running in <strong>{sandbox}</strong>.</p>
<form id="diagnose">
<label>Namespace <input name="namespace" value="demo" required></label>
<button type="submit">Diagnose</button>
</form>
<p id="status" role="status"></p>
<dl id="answer" hidden>
<dt>Answered by</dt><dd id="answer-build"></dd>
<dt>Route</dt><dd id="answer-route"></dd>
<dt>Pod</dt><dd id="answer-pod"></dd>
<dt>Diagnosis</dt><dd id="answer-diagnosis"></dd>
<dt>Error</dt><dd id="answer-error"></dd>
<dt>Trace</dt><dd id="answer-trace"></dd>
</dl>
</main>
</body>
</html>
"""


def page_routes(*, prompt_version: str, model_version: str, sandbox: str) -> list[Route]:
    """`/` (the page), `/page.js` and `/icon.svg`, for this build of the agent."""
    facts = {"prompt_version": prompt_version, "model_version": model_version, "sandbox": sandbox}
    body = PAGE.format(**{k: html.escape(v) for k, v in facts.items()})
    script = SCRIPT.read_text()

    async def page(_: Request) -> Response:
        return HTMLResponse(body, headers=HEADERS | {"Cache-Control": "no-store"})

    async def page_js(_: Request) -> Response:
        return Response(script, media_type="text/javascript; charset=utf-8", headers=HEADERS)

    async def icon(_: Request) -> Response:
        return Response(ICON, media_type="image/svg+xml", headers=HEADERS)

    return [
        Route("/", page, methods=["GET"]),
        Route("/page.js", page_js, methods=["GET"]),
        Route("/icon.svg", icon, methods=["GET"]),
    ]
