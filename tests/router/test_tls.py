"""The TLS settings of the router's client of the control plane (`sandboxd_router.tls`):
the system's store loaded once for an https control plane, no context at all for an http one."""

from __future__ import annotations

import ssl

from sandboxd_router.tls import context_for


def test_an_http_control_plane_gets_no_tls_context() -> None:
    assert context_for("http://127.0.0.1:8080") is None


def test_an_https_control_plane_verifies_against_the_store_loaded_once() -> None:
    context = context_for("https://sandboxd.example")
    assert context is not None and context.cert_store_stats()["x509_ca"] > 0
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context_for("HTTPS://other.example:8443/api") is context
