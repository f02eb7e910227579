"""HTML from the package's Jinja2 templates, every value escaped (autoescape on for all):
labels, fork logs and messages are text from pull requests and must show as text.

The page is a list of sections (`SECTIONS`), each rendered on its own: the page puts them
together, and the live updates (`sandboxd.web.live`) send the ones that changed, so the page
and its updates come from the same templates and JavaScript only swaps fragments in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from sandboxd.web.facts import LOG_LINES, Facts

SECTIONS = ("status", "connect", "forks", "faults", "metrics", "requests", "traces", "events")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # a page shown to one viewer; never kept by a shared cache
}
FORM_HEADERS = {**HEADERS, "Referrer-Policy": "same-origin"}
"""For the pages with the sign-in and sign-out forms: under `no-referrer` a browser sends
`Origin: null` with a form's POST, even to its own site, and the CSRF check
(`sandboxd.web.access.same_site`) refuses it. `same-origin` sends the real origin to this
site and still no referrer to any other."""
ASSET_TYPES = {
    "page.css": "text/css; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",  # named by the pages, else browsers ask /favicon.ico (a 404)
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    digest: str
    """The first 16 hex characters of its SHA-256: its ETag and its URL's `v`."""


class Pages:
    """The templates and the static files, loaded once (when the app is built)."""

    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("sandboxd.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.assets = {name: _asset(name, kind) for name, kind in ASSET_TYPES.items()}
        self.env.filters.update(when=when, ms=milliseconds, rate=rate)
        self.env.globals.update(asset=self.asset_url, LOG_LINES=LOG_LINES)

    def asset_url(self, name: str) -> str:
        return f"/static/{name}?v={self.assets[name].digest}"

    def render(self, template: str, **context: Any) -> str:
        return self.env.get_template(f"{template}.html.j2").render(**context)

    def sections(self, facts: Facts) -> dict[str, str]:
        context = _context(facts)
        return {name: self.render(f"sections/{name}", **context) for name in SECTIONS}

    def page(self, facts: Facts, sections: Mapping[str, str], *, event_id: str) -> str:
        return self.render(
            "sandbox",
            name=facts.sandbox.name,
            title=f"Sandbox {facts.sandbox.name}",
            sections={k: Markup(v) for k, v in sections.items()},  # noqa: S704 (rendered above)
            event_id=event_id,
        )


def _context(facts: Facts) -> dict[str, Any]:
    return {"s": facts.sandbox, "f": facts, "gh": facts.github}


def _asset(name: str, media_type: str) -> Asset:
    body = resources.files("sandboxd.web").joinpath("static", name).read_bytes()
    return Asset(body, media_type, hashlib.sha256(body).hexdigest()[:16])


def when(value: str | float | None) -> str:
    """An RFC 3339 string or epoch seconds as `2026-12-06 15:44:17 UTC`."""
    if value is None or value == "":
        return "—"
    if isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
    else:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def milliseconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"
