"""A worker process for tests/python/test_rate_limit_workers.py.

    rate_worker.py DSN WORKER_ID EVENT_TYPE
A RetryWorker with a no-op handler for EVENT_TYPE, run until the queue is
drained.
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> int:
    from retryq_py.worker import RetryWorker

    dsn, worker, event_type = sys.argv[1:4]

    def handler(item: Any) -> None:
        pass

    w = RetryWorker(
        dsn,
        {event_type: handler},
        worker_id=worker,
        batch_size=10,
        worker_count=2,
        poll_interval=0.2,
        cleanup_interval=3600,
    )
    w.run(exit_when_drained=True, install_signal_handlers=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
