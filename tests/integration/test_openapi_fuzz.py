"""Fuzz the API from its own OpenAPI document (schemathesis): no 5xx, no traceback, and every
response matches what the document says — status codes, content types, schemas, headers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import write_catalog
from tests.support.server import running_sandboxd

# Left out, on purpose:
# - use_after_free: a deleted sandbox stays readable as a tombstone (phase Deleted) for its
#   event log (DESIGN §4); a 404 comes only for a name never seen.
# - positive_data_acceptance: whether a schema-valid spec is acceptable depends on the catalog
#   (an unknown service) and on rules JSON Schema cannot state (a service forked twice).
EXCLUDED = "use_after_free,positive_data_acceptance"
# One worker: with several threads, CPython 3.11's ast.parse (which hypothesis calls to describe
# lambdas) can fail with "AST constructor recursion depth mismatch", a bug of the interpreter.


def test_the_api_honours_its_openapi_document(tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "sandboxd.yaml")
    with running_sandboxd(tmp_path / "data", catalog=catalog) as server:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "st"), "run", f"{server.url}/openapi.json",
             "-H", f"Authorization: Bearer {server.token}", "--checks", "all",
             "--exclude-checks", EXCLUDED, "--max-examples", "60", "--seed", "20261122",
             "--workers", "1", "--no-color"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip
        assert "Traceback" not in server.log()
    assert result.returncode == 0, result.stdout[-6000:]
    assert " passed" in result.stdout
