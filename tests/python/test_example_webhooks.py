"""examples/webhooks.py served by uvicorn as a user would run it: the app's
lifespan starts an AsyncRetryWorker, a webhook is queued through the app,
delivered after one failed attempt, and SIGTERM stops the app and the worker
cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import psycopg
import pytest

from tests.helpers import wait_until

# Run by one of .ci/run's passes only: the example app's lifespan under uvicorn; its
# worker's SQL is the worker scenarios' on every server.
pytestmark = pytest.mark.server_agnostic

REPO = Path(__file__).resolve().parents[2]


class Receiver(BaseHTTPRequestHandler):
    """Answers 503 to the first delivery, 200 to the next ones; a payload
    {"slow": true} is answered a second after it arrives."""

    received: ClassVar[list[Any]] = []
    slow_arrived = threading.Event()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append(body)
        if body.get("slow"):
            self.slow_arrived.set()
            time.sleep(1)  # the receiver is slow: a delivery in flight at SIGTERM
        self.send_response(503 if len(self.received) == 1 else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[Any]]]:
    Receiver.received = []
    Receiver.slow_arrived.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", Receiver.received
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_example_app_runs_the_worker_in_its_lifespan(
    dsn: str, receiver: tuple[str, list[Any]]
) -> None:
    hook, received = receiver
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RETRYQ_")},
        "RETRYQ_DATABASE_URL": dsn,
        "RETRYQ_INITIAL_DELAY": "1s",
        "RETRYQ_CLEANUP_INTERVAL": "0s",
    }
    app = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.webhooks:app", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def serving() -> bool:
            try:
                return httpx.get(f"{base}/worker", timeout=1).status_code == 200
            except httpx.TransportError:
                return app.poll() is not None  # it died: stop waiting, fail below
            return False

        wait_until(serving, timeout=20, what="the app to serve")
        assert app.poll() is None
        queued = httpx.post(f"{base}/webhooks", json={"url": hook, "payload": {"order": 7}})
        assert queued.status_code == 202
        item_id = queued.json()["id"]
        wait_until(lambda: len(received) == 2, timeout=20, what="the retried delivery")
        assert received == [{"order": 7}, {"order": 7}]
        wait_until(lambda: httpx.get(f"{base}/worker").json()["processed"] == 1, what="the ack")
        assert httpx.get(f"{base}/worker").json()["failed"] == 1
        slow = httpx.post(f"{base}/webhooks", json={"url": hook, "payload": {"slow": True}})
        assert Receiver.slow_arrived.wait(10)
        app.send_signal(signal.SIGTERM)  # the app stops the worker: in flight finishes
        output, _ = app.communicate(timeout=20)
    finally:
        app.kill()
        app.wait(10)
    # uvicorn ends a clean shutdown by raising the signal it caught again
    assert app.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert "Traceback" not in output and "ERROR" not in output, output
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT status, retry_count, last_error_code, locked_by FROM daz_retry_queue"
            " WHERE id = ANY(%s) ORDER BY id",
            [[item_id, slow.json()["id"]]],
        ).fetchall()
    assert rows == [("completed", 1, "http_503", None), ("completed", 0, None, None)]
