"""RetryQueue.add_many against one INSERT per item per transaction, side by side.

Ways to enqueue N items, measured in alternating rounds on one fresh
database (the table is truncated between runs):

- guide insert: the integration guide's INSERT, one transaction per item
  (what a producer that calls AddToRetryQueue in a loop does);
- add, per item: RetryQueue.add (enqueue_retry_item), one transaction each;
- enqueue_retry_items: the SQL function with a JSON array, --chunk items per
  call (what add_many sent before it used COPY; other clients' bulk path);
- add_many: RetryQueue.add_many, --chunk items per call (ids by one query,
  rows by binary COPY; returns the ids).

Prints items per second (median of the rounds) and the ratio of each bulk
path to the guide insert. --chunk defaults to 1000, as in scripts/bench's
enqueue target. Usage:

    .venv/bin/python scripts/bench_add_many.py [--items 5000] [--rounds 3] [--chunk 1000]
        [--dsn ADMIN_DSN]
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


# add()'s keywords -> enqueue_retry_items' keys, for the items above
JSON_KEYS = {
    "data": "event_data",
    "channel": "channel_name",
    "plugin": "plugin_name",
    "metadata": "event_metadata",
}


def json_array(conn: psycopg.Connection[Any], batch: list[dict[str, Any]]) -> None:
    payload = [{JSON_KEYS.get(k, k): v for k, v in it.items()} for it in batch]
    rows = conn.execute(
        "SELECT id, event_id FROM enqueue_retry_items(p_items => %s)", [Jsonb(payload)]
    ).fetchall()
    assert len(rows) == len(batch)


def add_many(conn: psycopg.Connection[Any], batch: list[dict[str, Any]]) -> None:
    assert len(RetryQueue(conn).add_many(batch)) == len(batch)


Way = Callable[[psycopg.Connection[Any], list[dict[str, Any]]], None]
PER_ITEM: dict[str, Way] = {
    "guide insert, 1 tx/item": guide_insert,
    "add, 1 tx/item": add_each,
}
BULK: dict[str, Way] = {
    "enqueue_retry_items (JSON)": json_array,
    "add_many (COPY)": add_many,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=1000, help="items per bulk call")
    parser.add_argument("--dsn", default=DEFAULT_ADMIN_DSN, help="admin DSN of the server")
    args = parser.parse_args()

    cluster = Cluster(args.dsn)
    batch = items(args.items)
    chunks = [batch[s : s + args.chunk] for s in range(0, len(batch), args.chunk)]
    rates: dict[str, list[float]] = {name: [] for name in (*PER_ITEM, *BULK)}
    try:
        with cluster.database("add_many") as dsn:
            migrate.apply(dsn)
            with psycopg.connect(dsn, autocommit=True) as conn:
                for _ in range(args.rounds):
                    for name in rates:
                        conn.execute("TRUNCATE daz_retry_queue")
                        conn.execute("CHECKPOINT")
                        started = time.perf_counter()
                        if name in PER_ITEM:
                            PER_ITEM[name](conn, batch)
                        else:
                            for chunk in chunks:
                                BULK[name](conn, chunk)
                        rates[name].append(args.items / (time.perf_counter() - started))
                        written = conn.execute("SELECT count(*) FROM daz_retry_queue").fetchone()
                        assert written == (args.items,), name
    finally:
        cluster.drop_all()

    base = statistics.median(rates["guide insert, 1 tx/item"])
    print(
        f"enqueue {args.items} items ({args.chunk} per bulk call), median of {args.rounds}"
        " rounds, one connection"
    )
    print(f"{'way':28} {'items/s':>10} {'vs guide insert':>16}")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:28} {rate:10.0f} {rate / base:15.1f}x")
    ratio = statistics.median(rates["add_many (COPY)"]) / base
    print(f"add_many / one INSERT per item per transaction: {ratio:.1f}x")
    return 0 if ratio >= 30 else 1


if __name__ == "__main__":
    sys.exit(main())
