"""The `retryq` command line (the console script is `retryq_py.cli:main`).

main: the app and the exit codes; queue_cmds, dead_letters, ops, worker: the
commands, each a thin shell over retryq_py.admin; demo: `retryq demo`;
render: consoles and tables; options: the shared flags.
"""

from retryq_py.cli.main import app, main

__all__ = ["app", "main"]
