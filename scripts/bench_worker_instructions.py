"""Instructions per item of the RetryWorker process (the client side of
scripts/bench's worker figure (c): worker_count 4, batch 10, a no-op handler,
one worker leasing its handler's type), counted by valgrind's callgrind over
the whole Python process, threads included. A drain of --small items is
subtracted from a drain of --large items, so that start-up, imports and the
pool's connections drop out. A count, not a time: about the same on a busy
machine as on an idle one (the batching can differ a little from run to run:
each run prints its statements).

    .venv/bin/python scripts/bench_worker_instructions.py [--small 500]
        [--large 3000] [--base REV]

With --base, the worker of that git revision (its retryq_py, run against
this tree's migrations) is counted too, first.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_db import DEFAULT_ADMIN_DSN, Cluster, connect, load_items, settle, vacuum_analyze

ROOT = Path(__file__).resolve().parent.parent

# the drain, run under valgrind with PYTHONPATH set to the tree under test;
# prints the statements the worker sent, by their first words
CHILD = r"""
import json, sys, threading
import psycopg
from retryq_py.worker import RetryWorker
dsn, n = sys.argv[1], int(sys.argv[2])
sent = {}
execute = psycopg.Cursor.execute
def counted(self, query, *args, **kwargs):
    key = " ".join(str(query).split()[:3])[:40]
    sent[key] = sent.get(key, 0) + 1
    return execute(self, query, *args, **kwargs)
psycopg.Cursor.execute = counted
seen = [0]
lock = threading.Lock()
def noop(item):
    with lock:
        seen[0] += 1
RetryWorker(dsn, {"bench.noop": noop}, worker_id="bench-instr", worker_count=4,
            batch_size=10, poll_interval=30, cleanup_interval=0).run(
    exit_when_drained=True, install_signal_handlers=False)
assert seen[0] == n, (seen[0], n)
print(json.dumps(sent))
"""


def count(cluster: Cluster, template: str, items: int, tree: Path) -> tuple[int, str]:
    """(instructions of the whole drain, the statements it sent)."""
    with cluster.database("instr", template) as dsn:
        with connect(dsn) as conn:
            load_items(conn, items)
        vacuum_analyze(dsn)
        settle(dsn)
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={tmp}/callgrind.out",
                    sys.executable,
                    "-c",
                    CHILD,
                    dsn,
                    str(items),
                ],
                env={**os.environ, "PYTHONPATH": str(tree)},
                cwd=tmp,  # not the repository: its retryq_py would shadow tree's
                capture_output=True,
                text=True,
            )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no count in valgrind's output: {out.stderr[-2000:]}")
    return int(found.group(1)), out.stdout.strip().splitlines()[-1]


def per_item(cluster: Cluster, template: str, small: int, large: int, tree: Path) -> int:
    a, sent_a = count(cluster, template, small, tree)
    b, sent_b = count(cluster, template, large, tree)
    print(f"  {small} items: {a:,} ({sent_a})\n  {large} items: {b:,} ({sent_b})", flush=True)
    return (b - a) // (large - small)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=3000)
    parser.add_argument("--base", help="a git revision whose worker is counted too")
    args = parser.parse_args()
    from retryq_py import migrate

    cluster = Cluster(DEFAULT_ADMIN_DSN)
    try:
        template = cluster.create("template")
        migrate.apply(cluster.dsn(template))
        trees = [("this tree", ROOT)]
        with tempfile.TemporaryDirectory() as tmp:
            if args.base:
                archive = ["git", "archive", args.base, "retryq_py"]
                tar = subprocess.run(archive, cwd=ROOT, check=True, capture_output=True).stdout
                subprocess.run(["tar", "-x", "-C", tmp], input=tar, check=True)
                trees.insert(0, (args.base, Path(tmp)))
            for name, tree in trees:
                print(f"{name}:", flush=True)
                print(
                    f"{name}: {per_item(cluster, template, args.small, args.large, tree):,}"
                    " instructions per item",
                    flush=True,
                )
    finally:
        cluster.drop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
