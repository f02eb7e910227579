"""The troubleshooter agent's page and its debug view of the requests it received, on a lone
agent process (no router, no tools: neither is needed to serve them). In a browser, behind the
router, with a preview link: tests/browser/test_preview.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.e2e.troubleshooter import EXAMPLE, agent_process
from tests.support.server import free_port


def agent_env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "SANDBOXD_"))}
    return env | {"OTEL_SDK_DISABLED": "true"} | more


@contextmanager
def lone_agent(**env: str) -> Iterator[str]:
    """agent.py on a free port with `env` added; its URL. Stopped on exit."""
    with agent_process(free_port(), agent_env(**env)) as url:
        yield url


def test_the_page_names_its_build_and_loads_only_from_its_own_origin() -> None:
    with lone_agent(AGENT_PROMPT_VERSION="v2", SANDBOXD_SANDBOX="<b>pr</b>") as agent:
        page = httpx.get(f"{agent}/", timeout=5)
        script = httpx.get(f"{agent}/page.js", timeout=5)
    assert page.status_code == 200
    assert 'data-prompt-version="v2"' in page.text
    assert 'data-sandbox="&lt;b&gt;pr&lt;/b&gt;"' in page.text  # escaped, never markup
    assert "<b>pr</b>" not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/page.js" defer></script>' in page.text
    assert page.text.count("<script") == 1  # no inline script
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert 'fetch("/diagnose"' in script.text


def test_the_debug_view_is_off_unless_asked_and_keeps_the_headers_as_received() -> None:
    with lone_agent() as agent:
        assert httpx.get(f"{agent}/debug/requests", timeout=5).status_code == 404
    cookie = 'a=1; b="x y"; c=d=e'
    with lone_agent(AGENT_DEBUG_REQUESTS="1") as agent:
        httpx.get(f"{agent}/healthz", timeout=5)  # not recorded: health checks are noise
        httpx.get(f"{agent}/?q=1", headers={"Cookie": cookie, "baggage": "k=v"}, timeout=5)
        (seen,) = httpx.get(f"{agent}/debug/requests", timeout=5).json()["items"]
    assert (seen["method"], seen["target"]) == ("GET", "/?q=1")
    assert ["cookie", cookie] in seen["headers"]
    assert ["baggage", "k=v"] in seen["headers"]


def test_a_debug_switch_that_is_not_0_or_1_stops_the_agent_with_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "agent.py")],
        env=agent_env(PORT=str(free_port()), AGENT_DEBUG_REQUESTS="yes"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "AGENT_DEBUG_REQUESTS: 'yes' is not 1 (on) or 0 (off)" in result.stderr
