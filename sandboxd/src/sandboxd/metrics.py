"""Prometheus metrics, in a registry per app (tests run several apps in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "sandboxd_http_requests_total",
            "API requests.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "sandboxd_http_request_duration_seconds",
            "API request latency.",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30),
            registry=r,
        )
        self.reconciles = Counter(
            "sandboxd_reconcile_total",
            "Reconcile passes by result: done, requeue (asked to run again), retry (a temporary "
            "error, backing off), error (an unexpected one, backing off), permanent (an error "
            "that is not retried).",
            ["result"],
            registry=r,
        )
        self.transitions = Counter(
            "sandboxd_sandbox_transitions_total",
            "Sandbox phase transitions.",
            ["phase"],
            registry=r,
        )
        self.expired = Counter(
            "sandboxd_sandboxes_expired_total", "Sandboxes whose TTL ran out.", registry=r
        )
        self.sandboxes = Gauge(
            "sandboxd_sandboxes", "Sandboxes by phase at the last sweep.", ["phase"], registry=r
        )
        self.routes = Gauge(
            "sandboxd_route_table_sandboxes", "Sandboxes in the route table.", registry=r
        )
