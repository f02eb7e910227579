"""Names and keys: what a sandbox may be called and how its routing key looks.

A sandbox name is a DNS label of at most 40 characters so that derived names (a Kubernetes
namespace `sbx-<name>`, a Deployment `<service>-<name>`) stay within the 63-character limit.
A routing key is opaque and unguessable: 16 characters of ``[a-z0-9]`` (about 82 bits).
"""

from __future__ import annotations

import re
import secrets
import string

MAX_SANDBOX_NAME = 40
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SANDBOX_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
ROUTING_KEY_ALPHABET = string.ascii_lowercase + string.digits
ROUTING_KEY_LENGTH = 16


def is_dns_label(value: str) -> bool:
    return bool(DNS_LABEL.fullmatch(value))


def is_sandbox_name(value: str) -> bool:
    return bool(SANDBOX_NAME.fullmatch(value))


def new_routing_key() -> str:
    return "".join(secrets.choice(ROUTING_KEY_ALPHABET) for _ in range(ROUTING_KEY_LENGTH))


def service_url_env(service: str) -> str:
    """`cluster-mcp` → `SANDBOXD_SERVICE_CLUSTER_MCP_URL`: where a process reaches a service."""
    return f"SANDBOXD_SERVICE_{service.upper().replace('-', '_')}_URL"


def baggage_member(key_name: str, routing_key: str) -> str:
    """The W3C baggage member that carries a routing key; keys are already URL-safe."""
    return f"{key_name}={routing_key}"
