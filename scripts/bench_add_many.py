"""RetryQueue.add_many against one INSERT per item per transaction, side by side.

Ways to enqueue N items, measured in alternating rounds on one fresh
database (the table is truncated between runs):

- guide insert: the integration guide's INSERT, one transaction per item
  (what a producer that calls AddToRetryQueue in a loop does);
- add, per item: RetryQueue.add (enqueue_retry_item), one transaction each;
- add_many: RetryQueue.add_many, one enqueue_retry_items call with a JSON
  array (returns the ids);
- copy_many: RetryQueue.copy_many, COPY into daz_retry_queue (no ids).

Prints items per second (median of the rounds) and the ratio of each bulk
path to the guide insert. Usage:

    .venv/bin/python scripts/bench_add_many.py [--items 5000] [--rounds 3] [--dsn ADMIN_DSN]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_db import DEFAULT_ADMIN_DSN, PAYLOAD, Cluster

from retryq_py import RetryQueue, migrate

# The guide's INSERT, verbatim but for psycopg's placeholders.
GUIDE_INSERT = re.sub(
    r"\$\d+",
    "%s",
    """
        INSERT INTO daz_retry_queue (
            event_type, channel_name, plugin_name, event_data,
            event_metadata, max_retries, retry_delay_seconds,
            backoff_multiplier, priority, correlation_id, tags
        ) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        RETURNING id, event_id;
    """,
)

DATA = json.loads(PAYLOAD)


def items(n: int) -> list[dict[str, Any]]:
    return [
        {
            "event_type": "cytube.event.chatMsg",
            "data": {**DATA, "n": i},
            "channel": "lobby",
            "plugin": "chat",
            "metadata": {"retry_reason": "initial_failure"},
            "correlation_id": f"corr-{i}",
            "tags": ["chat", "lobby"],
        }
        for i in range(n)
    ]


def guide_insert(conn: psycopg.Connection[Any], batch: list[dict[str, Any]]) -> None:
    for it in batch:
        conn.execute(
            GUIDE_INSERT,  # type: ignore[arg-type]
            (
                it["event_type"],
                it["channel"],
                it["plugin"],
                Jsonb(it["data"]),
                Jsonb(it["metadata"]),
                3,
                60,
                2.0,
                5,
                it["correlation_id"],
                it["tags"],
            ),
        ).fetchone()


def add_each(conn: psycopg.Connection[Any], batch: list[dict[str, Any]]) -> None:
    q = RetryQueue(conn)
    for it in batch:
        fields = dict(it)
        q.add(fields.pop("event_type"), fields.pop("data"), **fields)


def add_many(conn: psycopg.Connection[Any], batch: list[dict[str, Any]]) -> None:
    assert len(RetryQueue(conn).add_many(batch)) == len(batch)


def copy_many(conn: psycopg.Connection[Any], batch: list[dict[str, Any]]) -> None:
    assert RetryQueue(conn).copy_many(batch) == len(batch)


WAYS: dict[str, Callable[[psycopg.Connection[Any], list[dict[str, Any]]], None]] = {
    "guide insert, 1 tx/item": guide_insert,
    "add, 1 tx/item": add_each,
    "add_many (JSON array)": add_many,
    "copy_many (COPY)": copy_many,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsn", default=DEFAULT_ADMIN_DSN, help="admin DSN of the server")
    args = parser.parse_args()

    cluster = Cluster(args.dsn)
    batch = items(args.items)
    rates: dict[str, list[float]] = {name: [] for name in WAYS}
    try:
        with cluster.database("add_many") as dsn:
            migrate.apply(dsn)
            with psycopg.connect(dsn, autocommit=True) as conn:
                for _ in range(args.rounds):
                    for name, way in WAYS.items():
                        conn.execute("TRUNCATE daz_retry_queue")
                        conn.execute("CHECKPOINT")
                        started = time.perf_counter()
                        way(conn, batch)
                        rates[name].append(args.items / (time.perf_counter() - started))
                    written = conn.execute("SELECT count(*) FROM daz_retry_queue").fetchone()
                    assert written == (args.items,)
    finally:
        cluster.drop_all()

    base = statistics.median(rates["guide insert, 1 tx/item"])
    print(f"enqueue {args.items} items, median of {args.rounds} rounds, one connection")
    print(f"{'way':28} {'items/s':>10} {'vs guide insert':>16}")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:28} {rate:10.0f} {rate / base:15.1f}x")
    ratio = statistics.median(rates["add_many (JSON array)"]) / base
    print(f"add_many / one INSERT per item per transaction: {ratio:.1f}x")
    return 0 if ratio >= 20 else 1


if __name__ == "__main__":
    sys.exit(main())
