"""GitHub Actions' side of a job: workflow commands on stdout, and the files a step writes its
outputs (`GITHUB_OUTPUT`) and its job summary (`GITHUB_STEP_SUMMARY`) to.

Workflow commands are lines such as `::error title=T::message`; the runner reads them from the
step's stdout. A message is escaped (`%`, CR, LF) and a property also (`:` and `,`), or a
server-supplied text could end the command early or inject another one. Outputs use the
multi-line form `name<<DELIMITER` with a delimiter that cannot occur in the value.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, **properties: str) -> str:
    """One workflow command line, escaped."""
    props = ",".join(f"{key}={escape_property(value)}" for key, value in properties.items())
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


class Job:
    """Where a step's workflow commands, outputs and summary go."""

    def __init__(self, env: Mapping[str, str], out: TextIO) -> None:
        self._out = out
        self._outputs = _path(env.get("GITHUB_OUTPUT"))
        self._summary = _path(env.get("GITHUB_STEP_SUMMARY"))

    def mask(self, value: str) -> None:
        """Hide `value` in the job's log from here on (each line of it: masks are per line)."""
        for line in value.splitlines():
            if line.strip():
                self._emit(f"::add-mask::{escape_data(line)}")

    def error(self, message: str, *, title: str = "") -> None:
        self._emit(command("error", message, **({"title": title} if title else {})))

    def warning(self, message: str, *, title: str = "") -> None:
        self._emit(command("warning", message, **({"title": title} if title else {})))

    def notice(self, message: str, *, title: str = "") -> None:
        self._emit(command("notice", message, **({"title": title} if title else {})))

    def set_outputs(self, outputs: Mapping[str, str]) -> None:
        """Append `outputs` to `GITHUB_OUTPUT` (outside a job: print them as `name=value`)."""
        if self._outputs is None:
            for name, value in outputs.items():
                self._emit(f"{name}={value}")
            return
        lines = []
        for name, value in outputs.items():
            delimiter = _delimiter(value)
            lines += [f"{name}<<{delimiter}", value, delimiter]
        with self._outputs.open("a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")

    def summarise(self, markdown: str) -> None:
        """Append to the job summary, when the job has one."""
        if self._summary is not None:
            with self._summary.open("a", encoding="utf-8") as f:
                f.write(markdown.rstrip("\n") + "\n")

    def _emit(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _delimiter(value: str) -> str:
    while True:
        delimiter = f"ghadelimiter_{secrets.token_hex(8)}"
        if delimiter not in value:
            return delimiter
