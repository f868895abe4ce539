"""What a rate limit costs acquire, as a count of CPU instructions (valgrind's
callgrind): the figure of bench_rate_limit.py, but one that does not move
with the load of other work on the machine.

A throwaway cluster (as bench_instructions.py) gets, per install, three
databases filled as bench_rate_limit.py fills them (pending items over 4
keys):
  none      no rate limit configured
  limited   a limit on every key, far above what the run leases (100,000
            per 60 s): each lease takes a token
  complete  the items already leased 10 at a time: the completions alone
Each is driven by a single-user backend under callgrind, one statement per
batch of 10, each its own transaction: none and limited run
`complete_retry_items(ARRAY(SELECT id FROM acquire_retry_items(...)))`,
complete only the completion, so that acquire's count is the difference.
As in bench_instructions.py the figure per batch is the difference of a run
of n/5 and one of n items, so that the backend's start-up drops out.

    .venv/bin/python scripts/bench_rate_instructions.py [--base REV] [--items 1000]
        [--variant try.sql ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_ab import migrations_at
from bench_db import Cluster, connect, vacuum_analyze
from bench_instructions import Server

from retryq_py import migrate

ROOT = Path(__file__).resolve().parent.parent
KEYS = 4
BATCH = 10
CASES = ["none", "limited", "complete"]


def prepare(dsn: str, case: str, n: int) -> None:
    with connect(dsn) as conn:
        conn.execute(
            "INSERT INTO daz_retry_queue (event_type, plugin_name, event_data)"
            " SELECT 'type' || (g %% %s), 'p', jsonb_build_object('n', g)"
            " FROM generate_series(1, %s) AS g",
            (KEYS, n),
        )
        if case == "limited":
            for k in range(KEYS):
                conn.execute("SELECT retry_rate_limit_set(%s, 'p', 100000, 60)", (f"type{k}",))
    vacuum_analyze(dsn)
    if case == "complete":
        with connect(dsn) as conn:
            while conn.execute(
                "SELECT id FROM acquire_retry_items('w', %s, 86400)", (BATCH,)
            ).fetchall():
                pass


def script(case: str, n: int) -> str:
    batches = -(-n // BATCH)
    if case == "complete":
        return "".join(
            f"SELECT complete_retry_items(ARRAY(SELECT generate_series({s}, {s + BATCH - 1}))"
            "::bigint[], 'w');\n\n"
            for s in range(1, batches * BATCH + 1, BATCH)
        )
    return (
        f"SELECT complete_retry_items(ARRAY(SELECT id FROM acquire_retry_items('w', {BATCH},"
        " 300)), 'w');\n\n"
    ) * batches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="git revision whose migrations are 'before'")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--bin", type=Path, default=Path("/usr/lib/postgresql/15/bin"))
    parser.add_argument(
        "--variant",
        type=Path,
        action="append",
        default=[],
        help="an SQL file run on this tree's install: one more install to count",
    )
    args = parser.parse_args(argv)
    n, small = args.items, max(args.items // 5, 100)
    server = Server(args.bin)
    per_batch: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        installs: dict[str, tuple[Path, Path | None]] = {"this tree": (ROOT / "migrations", None)}
        if args.base:
            installs = {
                f"before ({args.base})": (migrations_at(args.base, Path(tmp)), None),
                **installs,
            }
        for variant in args.variant:
            installs[variant.stem] = (ROOT / "migrations", variant)
        dbs: dict[tuple[str, str], tuple[str, str]] = {}
        try:
            cluster = Cluster(server.start())
            for label, (directory, variant) in installs.items():
                template = cluster.create("template")
                migrate.apply(cluster.dsn(template), directory=directory)
                if variant is not None:
                    with connect(cluster.dsn(template)) as conn:
                        conn.execute("SET search_path = public, pg_temp")
                        conn.execute(variant.read_text())
                for case in CASES:
                    pair = []
                    for size in (small, n):
                        name = cluster.create(case, template)
                        prepare(cluster.dsn(name), case, size)
                        pair.append(name)
                    dbs[(label, case)] = (pair[0], pair[1])
            server.stop()
            for (label, case), (db_small, db_full) in dbs.items():
                ir = server.instructions(db_full, script(case, n)) - server.instructions(
                    db_small, script(case, small)
                )
                per_batch[(label, case)] = ir / ((n - small) / BATCH)
        finally:
            server.remove()
    print(
        f"bench_rate_instructions: {n:,} items over {KEYS} keys, acquire batch {BATCH},"
        f" instructions per acquire (the completions' count taken off)"
    )
    print("| install | none | limited | limited / none |")
    print("| --- | ---: | ---: | ---: |")
    for label in installs:
        done = per_batch[(label, "complete")]
        none = per_batch[(label, "none")] - done
        limited = per_batch[(label, "limited")] - done
        print(f"| {label} | {none:,.0f} | {limited:,.0f} | {limited / none:.3f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
