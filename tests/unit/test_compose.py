"""docker-compose.yml and the images it builds, checked where no Docker engine runs.

The Compose Specification's JSON Schema checks the file's shape. The other tests check what the
schema cannot see and `docker compose up` would find out late: Dockerfiles and COPY sources that
are missing or excluded by .dockerignore, ports that are not port numbers, dependencies on
services that do not exist, router ports left unpublished, and a baseline container that would
run something else than `sandboxd serve --start-baseline` does.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import itertools
import json
import re
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import pytest
import yaml
from jsonschema.validators import validator_for

from sandboxd.core.catalog import load_catalog
from sandboxd.core.plan import expand, plan_baselines

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests" / "data" / "compose-spec.schema.json"  # vendored: see tests/data/README.md
COMPOSE = ROOT / "docker-compose.yml"
IMAGE_ROOT = PurePosixPath("/app")  # both Dockerfiles copy examples/ to /app/examples
API_PORT = 7070

Service = dict[str, Any]


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    compose = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(compose, dict) and compose.get("services"), f"{COMPOSE}: no services"
    return compose["services"]


# The schema


def test_compose_file_follows_the_compose_specification() -> None:
    if not SCHEMA.is_file():
        pytest.fail(f"the Compose Specification's JSON Schema is missing: expected {SCHEMA}")
    schema = json.loads(SCHEMA.read_text())
    validator = schema_validator(schema)
    validator.check_schema(schema)
    errors = sorted(validator(schema).iter_errors(yaml.safe_load(COMPOSE.read_text())), key=str)
    assert not errors, "\n".join(
        f"{COMPOSE.name}: {'.'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}"
        for e in errors
    )


def schema_validator(schema: dict[str, Any]) -> Any:
    """The validator class of the schema's draft. The Compose spec declares draft 7 as
    `https://json-schema.org/draft-07/schema`, a spelling jsonschema does not register (it knows
    the draft's own id, `http://…`), so the `http` spelling is tried as well."""
    declared = str(schema.get("$schema", ""))
    for uri in (declared, declared.replace("https://", "http://", 1)):
        found = validator_for({"$schema": uri}, default=None)
        if found is not None:
            return found
    pytest.fail(f"{SCHEMA}: $schema {declared!r} is not a JSON Schema draft jsonschema knows")


# Images: Dockerfiles and what they copy


def builds(services: dict[str, Service]) -> list[tuple[str, Path, Path]]:
    """(service, build context, Dockerfile) for every service that is built here."""
    found = []
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = (COMPOSE.parent / build.get("context", ".")).resolve()
        found.append((name, context, context / build.get("dockerfile", "Dockerfile")))
    return found


def test_every_dockerfile_a_service_builds_exists(services: dict[str, Service]) -> None:
    found = builds(services)
    assert found, "no service is built from a Dockerfile"
    for name, context, dockerfile in found:
        assert context.is_dir(), f"services.{name}.build.context: {context} is not a directory"
        assert dockerfile.is_file(), f"services.{name}.build.dockerfile: {dockerfile} is missing"


def test_every_dockerfile_under_docker_is_built_by_a_service(
    services: dict[str, Service],
) -> None:
    """A Dockerfile no service builds would escape the COPY check below."""
    built = {dockerfile for _, _, dockerfile in builds(services)}
    for dockerfile in sorted((ROOT / "docker").glob("*Dockerfile*")):
        assert dockerfile in built, f"{dockerfile.relative_to(ROOT)}: no service builds it"


def test_every_copy_source_exists_in_its_build_context(services: dict[str, Service]) -> None:
    for name, context, dockerfile in builds(services):
        for source in copy_sources(dockerfile.read_text()):
            where = f"{dockerfile.relative_to(ROOT)} (services.{name})"
            path = (context / source.lstrip("/")).resolve()
            assert path.is_relative_to(context), f"{where}: {source} is outside the context"
            if re.search(r"[*?\[]", source):
                assert list(context.glob(source.lstrip("/"))), f"{where}: {source} matches nothing"
            else:
                assert path.exists(), f"{where}: COPY source {source} is not in {context}"


def test_no_copy_source_is_excluded_by_dockerignore(services: dict[str, Service]) -> None:
    for _, context, dockerfile in builds(services):
        ignore = context / ".dockerignore"
        patterns = ignore.read_text().splitlines() if ignore.is_file() else []
        for source in copy_sources(dockerfile.read_text()):
            path = PurePosixPath(source.strip("/"))
            for candidate in (path, *path.parents[:-1]):
                assert not ignored(str(candidate), patterns), (
                    f"{dockerfile.relative_to(ROOT)}: COPY {source}: .dockerignore excludes "
                    f"{candidate}"
                )


@pytest.mark.parametrize(
    ("dockerfile", "sources"),
    [
        ("COPY a.txt /x/", ["a.txt"]),
        ("COPY --chown=app:app --chmod=0644 a b/ /dest/", ["a", "b/"]),
        ('COPY --link ["a b", "c", "/dest/"]', ["a b", "c"]),
        ("COPY --from=build /wheels /wheels", []),
        (
            "# COPY gone /x\nRUN echo \\\n  COPY not-an-instruction\ncopy \\\n  x \\\n  y /z",
            ["x", "y"],
        ),
        ("ADD https://example.com/f.tgz /x\nADD --checksum=sha256:00 f.tgz /x", ["f.tgz"]),
        ("COPY <<EOF /x\nhello\nEOF", []),
    ],
)
def test_copy_sources_are_read_as_docker_reads_them(dockerfile: str, sources: list[str]) -> None:
    assert copy_sources(dockerfile) == sources


def copy_sources(dockerfile: str) -> list[str]:
    """The context paths a Dockerfile's COPY and ADD instructions read: not those copied from
    another stage or image (`--from`), not URLs and not heredocs."""
    sources = []
    for keyword, arguments in instructions(dockerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        words = arguments.split()
        flags = list(itertools.takewhile(lambda w: w.startswith("--"), words))
        rest = " ".join(words[len(flags) :])
        if any(f.startswith("--from=") for f in flags) or rest.startswith("<<"):
            continue
        paths = json.loads(rest) if rest.startswith("[") else rest.split()
        sources += [p for p in paths[:-1] if not re.match(r"^(https?://|git@)", p)]
    return sources


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuation lines joined, comments dropped.
    Heredoc bodies are not modelled; no instruction here uses one but the test above."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        found.append((keyword.upper(), arguments.strip()))
        pending = ""
    return found


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore's rule: the last pattern that matches decides, `!` re-includes."""
    excluded = False
    for raw in patterns:
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        if _glob(pattern.lstrip("!").strip().strip("/")).fullmatch(path):
            excluded = not negated
    return excluded


def _glob(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match plus `**` (any number of directories), as Docker matches."""
    regex = re.sub(r"\\\[(.*?)\\\]", r"[\1]", re.escape(pattern))  # keep [abc] classes
    regex = regex.replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
    return re.compile(regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]"))


# Ports and dependencies


def published_ports(entry: object) -> list[tuple[str, int | None, int]]:
    """(host ip, host port or None, container port) for each port of a `ports` entry, in the
    short form `[[ip:]host:]container[/protocol]` (ranges `a-b` allowed) or the long form."""
    if isinstance(entry, dict):
        ip, host, container = entry.get("host_ip", ""), entry.get("published"), entry["target"]
    else:
        text = str(entry).rsplit("/", 1)[0]
        ip = ""
        if text.startswith("["):  # an IPv6 host ip
            ip, _, text = text[1:].partition("]:")
        elif text.count(":") == 2:
            ip, _, text = text.partition(":")
        host, _, container = text.rpartition(":") if ":" in text else (None, "", text)
    if ip:
        ipaddress.ip_address(ip)
    containers = _port_range(container)
    if host in (None, ""):
        return [(ip, None, c) for c in containers]
    hosts = _port_range(host)
    if len(hosts) == len(containers):
        return [(ip, h, c) for h, c in zip(hosts, containers, strict=True)]
    if len(containers) == 1:  # Docker picks a free port of the host range
        return [(ip, hosts[0], containers[0])]
    raise ValueError(f"{entry!r}: the host and container ranges differ in length")


def _port_range(value: object) -> list[int]:
    first, _, last = str(value).partition("-")
    low, high = int(first), int(last or first)
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"{value!r} is not a port number or a port range within 1-65535")
    return list(range(low, high + 1))


def test_published_ports_are_port_numbers(services: dict[str, Service]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for name, service in services.items():
        for entry in service.get("ports", []):
            try:
                ports = published_ports(entry)
            except (ValueError, KeyError) as e:
                pytest.fail(f"services.{name}.ports: {entry!r}: {e}")
            for ip, host, _ in ports:
                if host is not None:
                    other = seen.setdefault((ip, host), name)
                    assert other == name, f"services.{name} and {other} both publish {host}"


@pytest.mark.parametrize(
    ("entry", "ports"),
    [
        (7070, [("", None, 7070)]),
        ("127.0.0.1:7070:7070", [("127.0.0.1", 7070, 7070)]),
        ("[::1]:8080:80/tcp", [("::1", 8080, 80)]),
        ("7311-7312:7311-7312", [("", 7311, 7311), ("", 7312, 7312)]),
        ({"target": 80, "published": "8080", "host_ip": "127.0.0.1"}, [("127.0.0.1", 8080, 80)]),
    ],
)
def test_ports_are_read_in_both_forms(entry: object, ports: list[tuple[str, int, int]]) -> None:
    assert published_ports(entry) == ports


@pytest.mark.parametrize("entry", ["70700:80", "0:80", "http:80", "localhost:1:80", "9-8:9-8"])
def test_ports_that_are_not_port_numbers_are_refused(entry: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (the message names the entry; any wording)
        published_ports(entry)


def test_dependencies_name_services_of_this_file(services: dict[str, Service]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on", [])
        needed = {f"services.{name}.depends_on": list(depends_on)}
        network = str(service.get("network_mode", ""))
        if network.startswith("service:"):
            needed[f"services.{name}.network_mode"] = [network.removeprefix("service:")]
        for where, names in needed.items():
            for other in names:
                assert other in services, f"{where}: {other!r} is not a service of {COMPOSE.name}"
                assert other != name, f"{where}: {name} depends on itself"


# The catalog the containers use


def environment(service: Service) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: str(v) for k, v in env.items()}


def repo_path(image_path: str) -> Path:
    """Where a path inside the images comes from in this repository."""
    return ROOT / PurePosixPath(image_path).relative_to(IMAGE_ROOT)


def test_containers_use_catalogs_that_exist(services: dict[str, Service]) -> None:
    catalogs = {
        f"services.{name}.environment": environment(service)["SANDBOXD_CATALOG"]
        for name, service in services.items()
        if name in ("sandboxd", "baseline")
    }
    for dockerfile in sorted((ROOT / "docker").glob("*Dockerfile*")):
        for default in re.findall(r"SANDBOXD_CATALOG=(\S+)", dockerfile.read_text()):
            catalogs[str(dockerfile.relative_to(ROOT))] = default
    assert len(catalogs) >= 2, "sandboxd and baseline must name their catalog"
    for where, catalog in catalogs.items():
        assert repo_path(catalog).is_file(), f"{where}: {catalog} is not in the images"
        load_catalog(repo_path(catalog))  # strict: sandboxd refuses to start on a bad one
    compose = {environment(services[n])["SANDBOXD_CATALOG"] for n in ("sandboxd", "baseline")}
    assert len(compose) == 1, f"sandboxd and the baseline use different catalogs: {compose}"


def test_sandboxd_publishes_the_api_and_every_router_port(services: dict[str, Service]) -> None:
    sandboxd = services["sandboxd"]
    catalog = load_catalog(repo_path(environment(sandboxd)["SANDBOXD_CATALOG"]))
    wanted = {API_PORT} | {s.router_port for s in catalog.services if s.router_port is not None}
    published = {c for entry in sandboxd.get("ports", []) for _, _, c in published_ports(entry)}
    assert wanted <= published, f"services.sandboxd.ports: publish {sorted(wanted - published)}"


def load_entrypoint() -> ModuleType:
    path = ROOT / "docker" / "baseline_entrypoint.py"
    spec = importlib.util.spec_from_file_location("baseline_entrypoint", path)
    assert spec is not None and spec.loader is not None, f"{path} cannot be imported"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "catalog", sorted(ROOT.glob("examples/*/sandboxd.yaml")), ids=lambda p: p.parent.name
)
def test_baseline_container_runs_what_start_baseline_runs(catalog: Path) -> None:
    entrypoint = load_entrypoint()
    outside = {"HOME": "/home/baseline", "SANDBOXD_ADMIN_TOKEN": "secret"}
    ours = entrypoint.plan(catalog, router_host="127.0.0.1", environ=outside)
    theirs = plan_baselines(
        load_catalog(catalog), router_host="127.0.0.1", workdir=str(catalog.parent)
    )
    assert [b.service for b in ours] == [p.service for p in theirs]
    for baseline, plan in zip(ours, theirs, strict=True):
        env = {**plan.env, "PORT": str(plan.port)}
        assert baseline.port == plan.port
        assert baseline.health == plan.health
        assert baseline.env == {"HOME": "/home/baseline", **env}  # no SANDBOXD_* leaks in
        assert baseline.argv == list(expand(plan.argv, env))
