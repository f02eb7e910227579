"""The kubernetes tier: one real control plane per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.kube import KubeControlPlane


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeControlPlane]:
    plane = KubeControlPlane()
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
