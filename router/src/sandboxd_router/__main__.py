"""`sandboxd-router`: a placeholder until the router's own issue lands; it says so and exits."""

from __future__ import annotations

import sys


def main() -> int:
    print(
        "sandboxd-router: the routing proxy is not built yet; the control plane already serves "
        "its route table at GET /v1/routes",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
