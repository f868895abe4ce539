"""A PgBouncer in transaction mode in front of the test server (Debian's
`pgbouncer` package; `.ci/run` installs it).

Small pools on purpose, so that consecutive statements of one client land
on different server connections, as they do under real load: a prepared
statement or a LISTEN does not survive that.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

BINARY = (
    os.environ.get("RETRYQ_TEST_PGBOUNCER") or shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
)


def available() -> bool:
    return Path(BINARY).is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def pgbouncer(server_dsn: str, *, pool_size: int = 2) -> Iterator[dict[str, str]]:
    """Runs one in transaction mode; yields the conninfo parameters that
    replace host and port in a DSN of the server's."""
    server = conninfo_to_dict(server_dsn)
    if str(server.get("host", "")).startswith("/"):
        # the embedded server listens on a socket in a directory only its
        # own user may enter; pgbouncer runs as postgres and cannot reach it
        pytest.skip("pgbouncer needs the test server on TCP (the embedded one is a socket)")
    home = Path(tempfile.mkdtemp(prefix="retryq-pgbouncer-"))
    home.chmod(0o777)  # pgbouncer drops root for the postgres user
    port = _free_port()
    user = str(server.get("user", "postgres"))
    (home / "users.txt").write_text(f'"{user}" "{server.get("password", "")}"\n')
    (home / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server.get('host', '127.0.0.1')} port={server.get('port', 5432)}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {home / 'users.txt'}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {pool_size}\nmin_pool_size = 0\nreserve_pool_size = 0\n"
        "max_client_conn = 500\nserver_lifetime = 3600\n"
        "ignore_startup_parameters = extra_float_digits\n"
        f"logfile = {home / 'pgbouncer.log'}\npidfile = {home / 'pgbouncer.pid'}\n"
    )
    for f in home.iterdir():
        f.chmod(0o666)
    argv = [BINARY, str(home / "pgbouncer.ini")]
    if os.geteuid() == 0:
        argv[1:1] = ["-u", "postgres"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    params = {"host": "127.0.0.1", "port": str(port)}
    try:
        deadline = time.monotonic() + 10
        while True:  # waiting on a condition with a deadline: it answers
            try:
                probe = make_conninfo(server_dsn, **params, connect_timeout="2")
                with psycopg.connect(probe, prepare_threshold=None) as conn:
                    conn.execute("SELECT 1")
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (
                        (home / "pgbouncer.log").read_text()
                        if (home / "pgbouncer.log").exists()
                        else ""
                    )
                    raise RuntimeError(f"pgbouncer did not start: {log[-2000:]}") from None
                time.sleep(0.05)
        yield params
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(home, ignore_errors=True)
