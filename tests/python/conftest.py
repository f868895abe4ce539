"""Fixtures of the Python tests."""

from __future__ import annotations

import pytest

from tests.python.workers import WORKERS, WorkerType


@pytest.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.server_agnostic] if name == "asyncio" else [])
        for name in WORKERS
    ]
)
def Worker(request: pytest.FixtureRequest) -> WorkerType:
    """RetryWorker, then AsyncRetryWorker (with RetryWorker's face): a
    scenario that takes this fixture runs on both. Both drive one engine that
    sends the same SQL, so the asyncio twin is `server_agnostic`: .ci/run runs
    it in one pass only (on PostgreSQL 18), RetryWorker's in both."""
    return WORKERS[request.param]
