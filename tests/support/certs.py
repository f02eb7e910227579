"""A loopback test server over TLS, with a self-signed certificate for 127.0.0.1 made by the
`openssl` command (what a client under test must be told to trust)."""

from __future__ import annotations

import ssl
import subprocess
from http.server import HTTPServer
from pathlib import Path


def serve_tls(httpd: HTTPServer, tmp: Path) -> Path:
    """`httpd` answers over TLS from now on; the certificate's path."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    return cert
