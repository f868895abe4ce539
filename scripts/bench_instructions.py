"""The server's work per item as a count of CPU instructions (valgrind's
callgrind), for the hot path before and after a change: the same figure on a
busy machine as on an idle one, where CPU time per item (bench_budget.py)
moves with the load of other work by tens of percent.

A throwaway cluster (initdb in a temporary directory, another port) gets one
database per install and case, filled as bench_budget fills them (items
loaded, then leased 100 at a time, for the completions). The server is then
stopped, and each database is driven by a single-user backend
(`postgres --single`) under callgrind, from a script of statements, each its
own transaction: complete_retry_items of 100 ids per call, complete_retry_item
per id, or the guide's INSERT of 100 rows per statement through
daz_retry_queue (add_many's COPY runs the same triggers, constraints and
indexes). The figure per item is the difference of two runs, n/5 and n
items, over the difference in items, so that the backend's start-up drops
out. No client, no network, no fsync (fsync = off): what remains is what the
server executes, parse, plan and commit included.

    .venv/bin/python scripts/bench_instructions.py --base 26354e9 [--items 500]
        [--cases many,one,insert] [--variant try.sql ...] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_ab import migrations_at
from bench_budget import _free_port
from bench_db import Cluster, connect, load_items, vacuum_analyze, write_section

from retryq_py import migrate

ROOT = Path(__file__).resolve().parent.parent
SECTION = "bench_instructions"
CASES = {
    "many": "complete_retry_items (100 per call)",
    "one": "complete_retry_item (one per transaction)",
    "insert": "INSERT into daz_retry_queue (100 rows per statement)",
}
INSERT = (
    "SELECT setval('daz_retry_queue_id_seq', {hi});\n\n"
    "INSERT INTO daz_retry_queue (id, event_id, event_type, channel_name, plugin_name,"
    " event_data, event_metadata, priority, correlation_id, tags, created_at, next_retry_at)"
    " SELECT g, gen_random_uuid(), 'bench.noop', 'lobby', 'bench',"
    " jsonb_build_object('channel', 'lobby', 'user', 'bench', 'n', g),"
    " '{{\"retry_reason\": \"initial_failure\"}}', 5, 'corr-' || g, ARRAY['bench', 'lobby'],"
    " now(), now() FROM generate_series({lo}, {hi}) AS g;\n\n"
)


def _script(case: str, n: int) -> str:
    """The statements for n items (ids 1..n, leased by 'w'), blank-line
    separated for `postgres --single -j`."""
    if case == "many":
        return "".join(
            f"SELECT complete_retry_items(ARRAY(SELECT generate_series({s}, {min(s + 99, n)}))"
            "::bigint[], 'w');\n\n"
            for s in range(1, n + 1, 100)
        )
    if case == "one":
        return "".join(f"SELECT complete_retry_item({i}, 'w');\n\n" for i in range(1, n + 1))
    return "".join(INSERT.format(lo=s + 1, hi=s + 100) for s in range(0, n, 100))


class Server:
    """A private cluster that runs as `postgres` when this script is root."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="retryq_instr_"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.pgdata = self.root / "pgdata"
        self.port = _free_port()
        self._run(str(bin_dir / "initdb"), "-D", str(self.pgdata), "-U", "postgres", "-A", "trust")
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\nautovacuum = off\nfsync = off\n"
            )

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.as_user, *cmd], check=True, capture_output=True)

    def start(self) -> str:
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.pgdata),
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop")

    def instructions(self, dbname: str, script: str) -> int:
        """callgrind's instruction count of a single-user backend running script."""
        path, out = self.root / "in.sql", self.root / "callgrind.out"
        path.write_text(script)
        if self.as_user:
            shutil.chown(path, "postgres", "postgres")
        with path.open() as stdin:
            done = subprocess.run(
                [
                    *self.as_user,
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={out}",
                    str(self.bin / "postgres"),
                    "--single",
                    "-j",
                    "-D",
                    str(self.pgdata),
                    dbname,
                ],
                stdin=stdin,
                capture_output=True,
                text=True,
            )
        out.unlink(missing_ok=True)
        if "ERROR" in done.stdout or "ERROR" in done.stderr:
            raise SystemExit(f"{dbname}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        found = re.search(r"Collected : (\d+)", done.stderr)
        if not found:
            raise SystemExit(f"no callgrind total for {dbname}: {done.stderr[-2000:]}")
        return int(found.group(1))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def prepare(dsn: str, case: str, n: int) -> None:
    with connect(dsn) as conn:
        if case == "insert":
            conn.execute("SELECT setval('daz_retry_queue_id_seq', 1, false)")
            return
        load_items(conn, n)
    vacuum_analyze(dsn)
    with connect(dsn) as conn:
        while conn.execute("SELECT id FROM acquire_retry_items('w', 100, 300)").fetchall():
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="git revision whose migrations are 'before'")
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--cases", default="many,one,insert")
    parser.add_argument("--bin", type=Path, default=Path("/usr/lib/postgresql/15/bin"))
    parser.add_argument(
        "--variant",
        type=Path,
        action="append",
        default=[],
        help="an SQL file run on this tree's install: one more column (a schema change to try)",
    )
    parser.add_argument("--write", type=Path, help="the BENCHMARKS.md whose section to replace")
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    n, small = args.items, max(args.items // 5, 100)
    server = Server(args.bin)
    results: dict[tuple[str, str], float] = {}
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
                        conn.execute(variant.read_text())
                for case in cases:
                    pair = []
                    for size in (small, n):
                        name = cluster.create(case, template)
                        prepare(cluster.dsn(name), case, size)
                        pair.append(name)
                    dbs[(label, case)] = (pair[0], pair[1])
            server.stop()
            for (label, case), (db_small, db_full) in dbs.items():
                ir = server.instructions(db_full, _script(case, n)) - server.instructions(
                    db_small, _script(case, small)
                )
                results[(label, case)] = ir / (n - small)
                print(
                    f"{label:24s} {CASES[case]:52s}"
                    f" {results[(label, case)]:>10,.0f} instructions/item"
                )
        finally:
            server.remove()
    lines = [
        f"<!-- {SECTION} -->",
        "### Instructions per item (callgrind)",
        "",
        f"`.venv/bin/python scripts/bench_instructions.py"
        f"{f' --base {args.base}' if args.base else ''} --items {n} --cases {args.cases}"
        f"{''.join(f' --variant {v}' for v in args.variant)}`: "
        "a single-user backend under valgrind's callgrind runs each case's statements, each its "
        "own transaction (fsync off, no client); the count for "
        f"{small:,} items is subtracted from the count for {n:,}, so start-up drops out. "
        "A count, not a time: the same on a busy machine as on an idle one.",
        "",
        "| case | " + " | ".join(installs) + (" | this tree/before |" if args.base else " |"),
        "|---|" + "---:|" * (len(installs) + (1 if args.base else 0)),
    ]
    for case in cases:
        cells = [f"{results[(label, case)]:,.0f}" for label in installs]
        ratio = ""
        if args.base:
            before, after = (results[(label, case)] for label in list(installs)[:2])
            ratio = f" {after / before:.2f} |"
        lines.append(f"| {CASES[case]} | " + " | ".join(cells) + " |" + ratio)
    lines += ["", f"<!-- /{SECTION} -->"]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
