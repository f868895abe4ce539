"""RetryWorker against pgqueuer, the judged worker figure (scripts/bench's (c))
in variants side by side: this tree's worker as it leases by default (only
its handlers' event types: a routed acquire), the same worker with
all_event_types=True (an unrouted acquire), and optionally the worker and
SQL of a git revision (--base). Each run measures every variant and pgqueuer
once, in a process of its own, in an order that reverses from run to run;
the verdict is the median of the per-run ratios to pgqueuer.

    .venv/bin/python scripts/bench_worker_ab.py [--items 10000] [--runs 5]
        [--base REV] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_db import write_section

ROOT = Path(__file__).resolve().parent.parent
SECTION = "bench_worker_ab"

# one measurement, run by the interpreter with PYTHONPATH set to the tree
# under test; prints {"rate": jobs/s to the last handler call, "module": path}
CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[3])
import bench_peers, retryq_py
import retryq_py.worker as worker
from bench_db import DEFAULT_ADMIN_DSN, Cluster
from retryq_py import migrate

kind, items = sys.argv[1], int(sys.argv[2])
if kind == "unrouted":
    class Unrouted(worker.RetryWorker):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, all_event_types=True, **kwargs)
    worker.RetryWorker = Unrouted
cluster = Cluster(DEFAULT_ADMIN_DSN)
try:
    if kind == "pgqueuer":
        rate = bench_peers.pgqueuer_drain(cluster, items)[0]
    else:
        template = cluster.create("template")
        migrate.apply(cluster.dsn(template))
        rate = bench_peers.retryworker_drain(cluster, template, items)[0]
finally:
    cluster.drop_all()
print(json.dumps({"rate": rate, "module": retryq_py.__file__}))
"""

LABELS = {
    "routed": "RetryWorker, this tree (leases its handlers' types: routed acquire)",
    "unrouted": "RetryWorker, this tree, all_event_types=True (unrouted acquire)",
    "base": "RetryWorker at --base (its SQL and Python)",
    "pgqueuer": "pgqueuer, 4 QueueManagers",
}


def tree_at(ref: str, into: Path) -> Path:
    """retryq_py and migrations as they were at ref."""
    archive = ["git", "archive", ref, "retryq_py", "migrations"]
    out = subprocess.run(archive, cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(out)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(kind: str, items: int, tree: Path, tries: int = 3) -> float:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            "routed" if kind == "base" else kind,
            str(items),
            str(ROOT / "scripts"),
        ],
        env={**os.environ, "PYTHONPATH": str(tree)},
        cwd=tempfile.gettempdir(),  # not the repository: its retryq_py would shadow tree's
        capture_output=True,
        text=True,
    )
    if out.returncode:
        # the server is shared: another run may hold every connection for a while
        if "too many clients" in out.stderr and tries > 1:
            time.sleep(10)
            return measure(kind, items, tree, tries - 1)
        raise RuntimeError(f"{kind}: {out.stderr.strip()[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["module"].startswith(str(tree)):
        raise RuntimeError(f"{kind} ran {result['module']}, not the tree {tree}")
    return float(result["rate"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--base", help="a git revision whose worker and SQL run as a variant too")
    parser.add_argument("--write", type=Path, help="the BENCHMARKS.md whose section to replace")
    args = parser.parse_args()
    kinds = ["routed", "unrouted", *(["base"] if args.base else []), "pgqueuer"]
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    loads: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = tree_at(args.base, Path(tmp)) if args.base else None
        for run in range(args.runs):
            for kind in kinds if run % 2 == 0 else kinds[::-1]:
                tree = base if kind == "base" and base is not None else ROOT
                rates[kind].append(measure(kind, args.items, tree))
            load = os.getloadavg()
            loads.append(f"{load[0]:.1f}")
            print(
                f"run {run + 1} (load {load[0]:.1f}): "
                + ", ".join(f"{k} {rates[k][-1]:,.0f}/s" for k in kinds),
                flush=True,
            )
    ratios = {
        k: [a / b for a, b in zip(rates[k], rates["pgqueuer"], strict=True)]
        for k in kinds
        if k != "pgqueuer"
    }
    command = f".venv/bin/python scripts/bench_worker_ab.py --items {args.items} --runs {args.runs}"
    if args.base:
        command += f" --base {args.base}"
    lines = [
        f"<!-- {SECTION} -->",
        "### RetryWorker against pgqueuer: routed and unrouted acquire",
        "",
        f"`{command}`: scripts/bench's worker figure ((c): worker_count 4, batch 10, a no-op "
        f"handler, {args.items:,} jobs, jobs over the time from start to the last handler "
        "call), each variant in a process of its own, the order reversed from run to run. "
        f"Load average after each run: {', '.join(loads)} (2 cores, other work beside it).",
        "",
        "| variant | jobs/s per run | median | / pgqueuer per run | median ratio |",
        "|---|---|---:|---|---:|",
    ]
    for k in kinds:
        per_run = ", ".join(f"{r:,.0f}" for r in rates[k])
        ratio = ratios.get(k)
        lines.append(
            f"| {LABELS[k]} | {per_run} | {statistics.median(rates[k]):,.0f} | "
            + (
                f"{', '.join(f'{r:.2f}' for r in ratio)} | {statistics.median(ratio):.2f} x |"
                if ratio
                else "| |"
            )
        )
    lines += ["", f"<!-- /{SECTION} -->"]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
        print(f"wrote the {SECTION} section of {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
