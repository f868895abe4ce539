"""Fixtures of the Python tests."""

from __future__ import annotations

import pytest

from tests.python.workers import WORKERS, WorkerType


@pytest.fixture(params=list(WORKERS))
def Worker(request: pytest.FixtureRequest) -> WorkerType:
    """RetryWorker, then AsyncRetryWorker (with RetryWorker's face): a
    scenario that takes this fixture runs on both."""
    return WORKERS[request.param]
