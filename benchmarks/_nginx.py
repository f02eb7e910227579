"""nginx configurations for the router benchmark: the fixed origin and the routing peer
(with or without a JSON access log: the signals benchmark's peer for recording on).

Both run as our own processes (`-p <dir> -c <conf> -e <log> -g 'daemon off;'`) with their pid
file, logs and temp paths inside the benchmark's temp dir; the system nginx is never touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

BODY = "x" * 1024  # the 1 KiB response body of the origin

# The peer's JSON access log: the fields of the router's own line (`telemetry/accesslog.py`),
# one JSON object a line, strings escaped by nginx itself.
JSON_LOG = (
    "log_format sbx_json escape=json '{"
    '"time":$msec,"service":"$server_port","route":"$sbx_route",'
    '"method":"$request_method","status":$status,"ms":$request_time,'
    '"bytesIn":$request_length,"bytesOut":$bytes_sent,"traceId":"$http_traceparent"'
    "}';"
)

# One regex, delimiter-safe: the member must start the header or follow `,`, `;` or space.
KEY_REGEX = r"~(?:^|[,;\s])sandbox=([^,;\s]+)"


def head(run_dir: Path) -> str:
    return f"""
worker_processes 1;
pid {run_dir}/nginx.pid;
error_log {run_dir}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {run_dir}/client_body;
  proxy_temp_path {run_dir}/proxy;
  fastcgi_temp_path {run_dir}/fastcgi;
  uwsgi_temp_path {run_dir}/uwsgi;
  scgi_temp_path {run_dir}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  default_type text/plain;
"""


def origin_conf(run_dir: Path, *, baseline_port: int, fork_port: int) -> str:
    """Two server blocks, so that a response says whether it came from "fork" or "baseline"."""
    servers = "".join(
        f"""
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      add_header x-origin {name};
      return 200 "{BODY}";
    }}
  }}"""
        for name, port in (("baseline", baseline_port), ("fork", fork_port))
    )
    return head(run_dir) + servers + "\n}\n"


def routing_conf(
    run_dir: Path,
    *,
    listen: Mapping[str, int],
    upstreams: Mapping[str, tuple[int, int]],
    keys: Mapping[str, str],
    access_log: Path | None = None,
) -> str:
    """nginx doing the router's job: baggage → key (one regex) → sandbox (exact, hashed map)
    → upstream, with pooled keep-alive upstreams and no buffering.

    `listen`: service → port; `upstreams`: service → (baseline port, fork port);
    `keys`: routing key → sandbox name (every sandbox forks every service); `access_log`: a
    file that gets a JSON line per request (`JSON_LOG`, nginx's default buffering: none), or
    None for no access log.
    """
    log = f"    access_log {access_log} sbx_json;\n" if access_log else ""
    entries = "".join(f'    {key} "sandbox={name}";\n' for key, name in keys.items())
    pools = "".join(
        f"""
  upstream {service}_{kind} {{
    server 127.0.0.1:{port};
    keepalive 256;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }}"""
        for service, (baseline, fork) in upstreams.items()
        for kind, port in (("baseline", baseline), ("fork", fork))
    )
    servers = "".join(
        f"""
  server {{
    listen 127.0.0.1:{port} backlog=4096;
{log}    location / {{
      proxy_pass http://{service}_$sbx_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_buffering off;
      add_header sandboxd-route $sbx_route always;
    }}
  }}"""
        for service, port in listen.items()
    )
    return (
        head(run_dir)
        + f"""
  {JSON_LOG if access_log else ""}
  map_hash_max_size 262144;
  map_hash_bucket_size 128;
  map $http_baggage $sbx_key {{
    default "";
    "{KEY_REGEX}" $1;
  }}
  map $sbx_key $sbx_route {{
    default baseline;
{entries}  }}
  map $sbx_route $sbx_upstream {{
    default fork;
    baseline baseline;
  }}
"""
        + pools
        + servers
        + "\n}\n"
    )


def argv(nginx: str, run_dir: Path, conf: Path) -> list[str]:
    return [
        nginx,
        "-p",
        str(run_dir),
        "-c",
        str(conf),
        "-e",
        str(run_dir / "error.log"),
        "-g",
        "daemon off;",
    ]


def write(run_dir: Path, text: str) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)  # workers run as nobody when we are root
    conf = run_dir / "nginx.conf"
    conf.write_text(text)
    return conf
