# syntax=docker/dockerfile:1
# sandboxd's control plane with the embedded router (`--with-router`).
# Build from the repository root: docker build -f docker/sandboxd.Dockerfile -t sandboxd .
# tests/packaging/ runs this file's `pip wheel` and `pip install --no-index` lines in fresh venvs.

# Wheels of the three distributions and of every dependency, each built with build isolation.
# The router's hot path compiles with mypyc (router/setup.py): the C compiler stays in this stage.
FROM python:3.11-slim AS wheels
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY sandboxd/ sandboxd/
COPY router/ router/
COPY cli/ cli/
RUN pip wheel --wheel-dir /wheels "./sandboxd[postgres]" ./router ./cli

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Forks run as sandboxd's child processes (local runtime) from the catalog's directory, so this
# image carries the examples and what they import as well.
WORKDIR /app
COPY docker/examples-requirements.txt docker/
RUN pip install -r docker/examples-requirements.txt

# Only the wheels reach this image (no compiler, no sources, no build tools), and only from the
# wheels stage (--no-index): a same-named distribution on an index cannot stand in for ours.
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "sandboxd[postgres]" sandboxd-router sandboxd-cli

COPY examples/ examples/

# The data dir (admin token, fork and router logs; the SQLite file when no database URL is
# given) is the only place sandboxd writes; docker-compose.yml makes it a volume.
RUN useradd --system --uid 10001 --user-group --create-home sandboxd \
    && install -d -o sandboxd -g sandboxd -m 0700 /var/lib/sandboxd
USER sandboxd

# SANDBOXD_DATABASE_URL and SANDBOXD_ADMIN_TOKEN come from the environment; unset, sandboxd
# uses SQLite in the data dir and generates the token into it (`sandbox` finds it there).
# The router listens on SANDBOXD_ROUTER_HOST: 0.0.0.0 so that published router ports reach it
# (forks then get SANDBOXD_SERVICE_<NAME>_URL=http://0.0.0.0:<port>, which Linux connects locally).
ENV SANDBOXD_CATALOG=/app/examples/troubleshooter/sandboxd.yaml \
    SANDBOXD_DATA_DIR=/var/lib/sandboxd \
    SANDBOXD_ROUTER_HOST=0.0.0.0

# The API; the router also listens on each catalog service's routerPort (7301… in the examples).
EXPOSE 7070

# slim has no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SANDBOXD_PORT', '7070'), timeout=3)"]

# All interfaces inside the container, so a published port reaches the API: plain HTTP, so publish
# it on loopback (as docker-compose.yml does) or behind a TLS proxy.
ENTRYPOINT ["sandboxd", "serve", "--host", "0.0.0.0", "--insecure-listen", "--with-router"]
