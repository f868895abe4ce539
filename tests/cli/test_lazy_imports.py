"""`retryq --version` and `--help` (the app's and a command's) load neither
psycopg, the worker nor the metrics: they cost about half a second of imports
that these never use (the package and the CLI now load them on first use)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("psycopg", "retryq_py.worker", "retryq_py.metrics", "prometheus_client")

PROBE = """
import json, sys
from retryq_py.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stderr.write(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in
    ("psycopg", "prometheus_client", "retryq_py"))))
"""


@pytest.mark.server_agnostic
@pytest.mark.parametrize(
    "argv", [["--version"], ["--help"], ["stats", "--help"], ["worker", "--help"]], ids=" ".join
)
def test_version_and_help_load_no_database_code(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip()  # the version or the help was printed
    loaded = json.loads(done.stderr)
    assert "retryq_py.cli.main" in loaded
    heavy = [m for m in loaded if m in HEAVY or m.startswith(tuple(f"{h}." for h in HEAVY))]
    assert heavy == []


@pytest.mark.server_agnostic
def test_the_package_names_still_load_on_use() -> None:
    import retryq_py
    from retryq_py import admin

    assert retryq_py.RetryQueue.__name__ == "RetryQueue"
    assert admin.ExitCode.USAGE == 2
    assert set(retryq_py.__all__) <= set(dir(retryq_py))
    with pytest.raises(AttributeError):
        _ = retryq_py.NoSuchName  # type: ignore[attr-defined]
