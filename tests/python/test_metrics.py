"""Prometheus metrics: a worker under load exports numbers that match the
table; scrapes stay correct for estimates, circuits, least privilege and a
database that is down."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from retryq_py import RetryWorker, ops
from retryq_py.metrics import QueueCollector, start_metrics_server
from tests.python.worker_handlers import REGISTRY as HANDLERS

Conn = psycopg.Connection[Any]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC = re.compile(r"\b((?:retryq|daz_retry_queue)_[a-z_]*[a-z])\b")


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return parse(resp.read().decode())


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def table_counts(conn: Conn, expr: str) -> dict[tuple[str, ...], int]:
    rows = conn.execute(expr).fetchall()
    return {tuple("" if v is None else str(v) for v in r[:-1]): int(r[-1]) for r in rows}


def test_worker_under_load_exports_metrics_that_match_the_table(dsn: str, conn: Conn) -> None:
    def items(n: int, event_type: str, plugin: str, **extra: Any) -> list[dict[str, Any]]:
        return [
            {"event_type": event_type, "plugin_name": plugin, "event_data": {"fail_times": 1},
             "retry_delay_seconds": 0, **extra}
            for _ in range(n)
        ]

    load = (
        items(400, "ok", "web")
        + items(40, "broken", "api")
        + items(30, "down", "db", max_retries=2)
        + items(30, "flaky", "web")
    )
    conn.execute("SELECT count(*) FROM enqueue_retry_items(%s)", (Jsonb(load),))
    total = len(load)

    server = start_metrics_server(0, "127.0.0.1", database=dsn)  # with the worker metrics
    try:
        before = scrape(server.port)
        worker = RetryWorker(
            dsn, HANDLERS, worker_count=3, batch_size=20, poll_interval=0.5,
            lock_timeout=5, cleanup_interval=0, max_backoff=0.2,
        )
        thread = worker.start(exit_when_drained=True)
        during = []
        while thread.is_alive():
            s = scrape(server.port)
            assert get(s, "retryq_queue_up") == 1
            active = get(s, "daz_retry_queue_size", status="pending") + get(
                s, "daz_retry_queue_size", status="processing"
            )
            during.append(active)
            thread.join(timeout=0.05)
        assert len(during) >= 2, "the worker finished before a scrape saw it at work"
        assert max(during) > 0

        conn.execute("ANALYZE daz_retry_queue")
        after = scrape(server.port)
    finally:
        server.close()

    sizes = table_counts(conn, "SELECT status, count(*) FROM daz_retry_queue GROUP BY 1")
    for status in ("pending", "processing", "completed", "dead_letter"):
        assert get(after, "daz_retry_queue_size", status=status) == sizes.get((status,), 0), status
    assert sum(sizes.values()) == total

    dead = table_counts(
        conn,
        "SELECT event_type, plugin_name, count(*) FROM daz_retry_queue"
        " WHERE status = 'dead_letter' GROUP BY 1, 2",
    )
    assert dead == {("broken", "api"): 40, ("down", "db"): 30}
    for (event_type, plugin), n in dead.items():
        assert get(
            after, "retryq_queue_dead_letters", event_type=event_type, plugin_name=plugin
        ) == n
    assert get(after, "retryq_queue_oldest_due_age_seconds") == 0
    assert get(after, "retryq_queue_expired_leases") == 0

    # The worker's own counters, per event_type, against the table's outcomes:
    # every error entry that was not the last one was a retry.
    outcome = table_counts(
        conn,
        "SELECT event_type, count(*) FILTER (WHERE status = 'completed'),"
        " count(*) FILTER (WHERE status = 'dead_letter'),"
        " sum(jsonb_array_length(error_history)), count(*) FROM daz_retry_queue GROUP BY 1",
    )
    for (event_type, completed, dead_n, errors), _n in outcome.items():
        def delta(name: str, et: str = event_type) -> float:
            return get(after, name, event_type=et) - get(before, name, event_type=et)

        assert delta("retryq_worker_items_processed_total") == int(completed), event_type
        assert delta("retryq_worker_items_dead_lettered_total") == int(dead_n), event_type
        assert delta("retryq_worker_items_failed_total") == int(errors) - int(dead_n), event_type
        attempts = int(completed) + int(errors)
        assert delta("retryq_worker_handler_duration_seconds_count") == attempts, event_type
    acquires = get(after, "retryq_worker_acquire_duration_seconds_count") - get(
        before, "retryq_worker_acquire_duration_seconds_count"
    )
    assert acquires >= (400 + 40 + 30 + 30) / 20


def test_completed_is_the_planner_estimate_and_follows_growth(dsn: str, conn: Conn) -> None:
    def add_finished(n: int, status: str = "completed") -> None:
        stamp = "completed_at" if status == "completed" else "dead_lettered_at"
        conn.execute(
            f"INSERT INTO daz_retry_queue (event_type, event_data, status, {stamp})"
            " SELECT 'bulk', jsonb_build_object('n', g), %s, now()"
            " FROM generate_series(1, %s) AS g",
            (status, n),
        )

    add_finished(20_000)
    add_finished(25, "dead_letter")
    # never analyzed and smaller than the sample: counted exactly
    m = ops.collect_queue_metrics(conn)
    assert (m.completed_is_estimate, m.sizes["completed"], m.sizes["dead_letter"]) == (
        False, 20_000, 25
    )
    conn.execute("ANALYZE _retryq_finished")
    m = ops.collect_queue_metrics(conn)
    assert m.completed_is_estimate
    assert m.sizes["completed"] == pytest.approx(20_000, rel=0.02)
    # more rows without a new ANALYZE: the estimate scales with the table's pages
    add_finished(20_000)
    m = ops.collect_queue_metrics(conn)
    assert m.sizes["completed"] == pytest.approx(40_000, rel=0.05)
    assert m.sizes["dead_letter"] == 25


def test_cancelled_items_are_counted_exactly_and_apart(dsn: str, conn: Conn) -> None:
    """Cancelled items are neither completed nor dead letters: a size of their
    own and a gauge per key, counted through their partial index."""
    conn.execute(
        "SELECT count(*) FROM enqueue_retry_items(%s)",
        (Jsonb([{"event_type": "mail", "plugin_name": "p", "event_data": 1}] * 3
               + [{"event_type": "sms", "event_data": 1}] * 2),),
    )
    conn.execute("SELECT count(*) FROM acquire_retry_items('w', 1)")  # one mail leased
    conn.execute("SELECT cancel_retry_items(p_event_type => 'mail')")
    m = ops.collect_queue_metrics(conn)
    assert {k: m.sizes[k] for k in ("pending", "completed", "dead_letter", "cancelled")} == {
        "pending": 2, "completed": 0, "dead_letter": 0, "cancelled": 3
    }
    registry = CollectorRegistry()
    collector = QueueCollector(dsn)
    registry.register(collector)
    try:
        got = parse(generate_latest(registry).decode())
    finally:
        collector.close()
    assert get(got, "daz_retry_queue_size", status="cancelled") == 3
    assert get(got, "daz_retry_queue_size", status="completed") == 0
    assert get(got, "retryq_queue_cancelled", event_type="mail", plugin_name="p") == 3
    assert ("retryq_queue_cancelled", (("event_type", "sms"), ("plugin_name", ""))) not in got


def test_a_large_never_analyzed_table_is_sampled(dsn: str, conn: Conn) -> None:
    conn.execute("ALTER TABLE _retryq_completed SET (autovacuum_enabled = false)")
    conn.execute(
        "INSERT INTO daz_retry_queue (event_type, event_data, status, completed_at)"
        " SELECT 'bulk', jsonb_build_object('n', g, 'text', repeat('x', 100)), 'completed', now()"
        " FROM generate_series(1, 100000) AS g"
    )
    pages = conn.execute(
        "SELECT pg_relation_size('_retryq_completed') / current_setting('block_size')::int"
    ).fetchone()
    assert pages is not None and pages[0] > ops.SAMPLE_PAGES  # else this proves nothing
    m = ops.collect_queue_metrics(conn)
    assert m.completed_is_estimate
    assert m.sizes["completed"] == pytest.approx(100_000, rel=0.05)


def test_circuits_and_lease_expiries_are_exported(dsn: str, conn: Conn) -> None:
    conn.execute("SELECT retry_circuit_configure(NULL, NULL, 2, 60, 600)")
    conn.execute(
        "SELECT count(*) FROM enqueue_retry_items(%s, now() - interval '1 h')",
        (Jsonb([{"event_type": "http", "plugin_name": "p", "event_data": 1}] * 2),),
    )
    conn.execute("SELECT count(*) FROM acquire_retry_items('gone', 10, 1, now() - interval '1 h')")
    conn.execute("SELECT count(*) FROM acquire_retry_items('w2', 10)")  # takes both over
    conn.execute("SELECT retry_circuit_open('mail')")
    registry = CollectorRegistry()
    collector = QueueCollector(dsn)
    registry.register(collector)
    try:
        s = parse(generate_latest(registry).decode())
    finally:
        collector.close()
    key = {"event_type": "http", "plugin_name": "p"}
    assert get(s, "retryq_queue_lease_expiries_total", **key) == 2
    assert get(s, "retryq_circuit_state", **key) == 2  # tripped by the two expiries
    assert get(s, "retryq_circuit_consecutive_failures", **key) == 2
    assert get(s, "retryq_circuit_opened_total", **key) == 1
    assert get(s, "retryq_circuit_state", event_type="mail", plugin_name="") == 2


def test_pauses_are_exported_with_the_items_they_hold(dsn: str, conn: Conn) -> None:
    conn.execute(
        "SELECT count(*) FROM enqueue_retry_items(%s)",
        (Jsonb([{"event_type": "mail", "plugin_name": "smtp", "event_data": 1}] * 3),),
    )
    conn.execute("SELECT retry_queue_pause('mail')")
    conn.execute("SELECT retry_queue_pause(NULL, 'smtp')")
    conn.execute("SELECT retry_queue_pause(NULL, '')")  # the items without a plugin
    conn.execute("SELECT count(*) FROM enqueue_retry_item('sms', '1')")
    registry = CollectorRegistry()
    collector = QueueCollector(dsn)
    registry.register(collector)
    try:
        s = parse(generate_latest(registry).decode())
    finally:
        collector.close()
    assert get(s, "retryq_queue_paused_items", event_type="mail", plugin_name="*") == 3
    assert get(s, "retryq_queue_paused_items", event_type="*", plugin_name="smtp") == 3
    assert get(s, "retryq_queue_paused_items", event_type="*", plugin_name="") == 1


def test_each_pause_exports_its_age(dsn: str, conn: Conn) -> None:
    """retryq_queue_pause_age_seconds: how long each pause has lasted, by the
    database's clock (what RetryqPausedTooLong alerts on)."""
    conn.execute("SELECT retry_queue_pause('mail', p_now => now() - interval '2 hours')")
    conn.execute("SELECT retry_queue_pause(NULL, '', p_now => now() - interval '30 seconds')")
    registry = CollectorRegistry()
    collector = QueueCollector(dsn)
    registry.register(collector)
    try:
        s = parse(generate_latest(registry).decode())
    finally:
        collector.close()
    old = get(s, "retryq_queue_pause_age_seconds", event_type="mail", plugin_name="*")
    young = get(s, "retryq_queue_pause_age_seconds", event_type="*", plugin_name="")
    assert 7200 <= old < 7200 + 60 and 30 <= young < 30 + 60, (old, young)


def test_scrape_works_as_retryq_admin(dsn: str, conn: Conn) -> None:
    login = f"t_metrics_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    conn.execute(f'CREATE ROLE "{login}" LOGIN IN ROLE retryq_admin')
    try:
        conn.execute("SELECT count(*) FROM enqueue_retry_item('x', '1')")
        with psycopg.connect(make_conninfo(dsn, user=login)) as admin:
            m = ops.collect_queue_metrics(admin)
        assert m.sizes["pending"] == 1
    finally:
        conn.execute(f'DROP ROLE "{login}"')


def test_scrape_answers_when_the_database_is_down() -> None:
    collector = QueueCollector("host=127.0.0.1 port=1 user=x dbname=x connect_timeout=1",
                               timeout=1.0)
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        s = parse(generate_latest(registry).decode())
    finally:
        collector.close()
    assert s == {("retryq_queue_up", ()): 0.0}


def test_retryq_metrics_command_serves_the_queue(dsn: str, conn: Conn) -> None:
    conn.execute("SELECT count(*) FROM enqueue_retry_item('cli', '1')")
    proc = subprocess.Popen(
        [sys.executable, "-m", "retryq_py.cli", "metrics", "--database", dsn, "--port", "0",
         "--addr", "127.0.0.1"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # blocks until the server is up (or the command died)
        assert "/metrics" in line, line
        port = int(line.split("127.0.0.1:")[1].split("/")[0])
        s = scrape(port)
        assert get(s, "daz_retry_queue_size", status="pending") == 1
        assert get(s, "retryq_queue_up") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def _exported_names(dsn: str, conn: Conn) -> set[str]:
    """Every sample name /metrics can carry: the collector's (over a queue with a
    dead letter and a circuit) and the worker metric families'."""
    conn.execute("SELECT count(*) FROM enqueue_retry_item('x', '1', p_max_retries => 0)")
    conn.execute("SELECT count(*) FROM acquire_retry_items('w')")
    conn.execute("SELECT fail_retry_item(id, 'w', 'e') FROM daz_retry_queue")
    conn.execute("SELECT retry_queue_pause('y')")
    registry = CollectorRegistry()
    collector = QueueCollector(dsn)
    registry.register(collector)
    try:
        names = {name for name, _ in parse(generate_latest(registry).decode())}
    finally:
        collector.close()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
    for family in REGISTRY.collect():
        if family.name.startswith("retryq_worker_"):
            names |= {family.name + s for s in suffixes.get(family.type, [""])}
    return names


def test_dashboard_and_alerts_use_only_exported_metrics(dsn: str, conn: Conn) -> None:
    exported = _exported_names(dsn, conn)
    dashboard = json.loads((DEPLOY / "grafana" / "retryq-dashboard.json").read_text())
    exprs = [
        t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])
    ]
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    used = set(METRIC.findall("\n".join(exprs) + alerts))
    assert used, "no metric found: the pattern is wrong"
    assert used <= exported, sorted(used - exported)
    assert {"daz_retry_queue_size", "retryq_circuit_state"} <= used

    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (.ci/run provides it): PromQL syntax not checked")
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard_expr_{i}", "expr": e.replace("$event_type", ".*")}
        for i, e in enumerate(exprs)
    ]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        json.dump(rules, f)  # JSON is YAML
        f.flush()
        done = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rate_limits_are_exported(dsn: str, conn: Conn) -> None:
    conn.execute("SELECT retry_rate_limit_set('sms', 'twilio', 3, 60)")
    conn.execute(
        "SELECT count(*) FROM enqueue_retry_items(%s, now() - interval '1 s')",
        (Jsonb([{"event_type": "sms", "plugin_name": "twilio", "event_data": 1}] * 5),),
    )
    conn.execute("SELECT count(*) FROM acquire_retry_items('w', 10)")
    registry = CollectorRegistry()
    collector = QueueCollector(dsn)
    registry.register(collector)
    try:
        s = parse(generate_latest(registry).decode())
    finally:
        collector.close()
    key = {"event_type": "sms", "plugin_name": "twilio"}
    assert get(s, "retryq_rate_limit_max_leases", **key) == 3
    assert get(s, "retryq_rate_limit_period_seconds", **key) == 60
    assert get(s, "retryq_rate_limit_leases_in_period", **key) == 3
