"""What each `retryq` command does, as plain functions that return data.

The CLI (retryq_py.cli) only parses flags, calls one of these and renders the
result, so tests call these directly. Errors a person can act on are
`CommandError`s carrying the process exit code (`ExitCode`).

Each name below loads its module on first use (PEP 562), so that the CLI
loads a command's modules (and psycopg, the worker, the metrics) only when
it runs one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# target is cheap (psycopg loads with the first connection) and its function
# `target` must win over the submodule of that name, which importing it binds
from retryq_py.admin.target import (
    DATABASE_ENV,
    DEFAULT_CONNECT_TIMEOUT,
    CommandError,
    DatabaseUnreachable,
    Declined,
    ExitCode,
    Interrupted,
    NotInstalled,
    Target,
    UsageProblem,
    check,
    connect,
    first_line,
    is_installed,
    is_refused_value,
    open_connection,
    queue,
    refusal,
    schema_exists,
    target,
)

if TYPE_CHECKING:
    from retryq_py.admin.circuits import (
        close_circuit,
        configure_circuit,
        list_circuits,
        open_circuit,
        require_key,
    )
    from retryq_py.admin.dead_letters import (
        DeadLetter,
        DeadLetterFilter,
        ErrorEntry,
        dead_letter_list,
        dead_letter_match,
        dead_letter_purge,
        dead_letter_requeue,
        error_entries,
        item_show,
    )
    from retryq_py.admin.inputs import (
        ENQUEUE_KEYS,
        moment_text,
        parse_duration,
        parse_json,
        parse_json_lines,
        parse_json_object,
    )
    from retryq_py.admin.items import (
        ENQUEUE_CHUNK,
        STATUSES,
        CancelFilter,
        Cancelled,
        Cleaned,
        Stats,
        cancel_items,
        cleanup,
        cleanup_due,
        enqueue,
        enqueue_many,
        stats,
    )
    from retryq_py.admin.migrations import (
        MigrationRow,
        migrate_apply,
        migrate_rollback,
        migrate_status,
    )
    from retryq_py.admin.pauses import list_pauses, pause, pause_key, resume
    from retryq_py.admin.rate_limits import (
        clear_rate_limit,
        list_rate_limits,
        set_rate_limit,
    )
    from retryq_py.admin.running import (
        NextRetry,
        bind_port,
        listen_error,
        load_handlers,
        load_worker_config,
        run_worker,
        serve_metrics,
    )

_LAZY = {
    "close_circuit": "retryq_py.admin.circuits",
    "configure_circuit": "retryq_py.admin.circuits",
    "list_circuits": "retryq_py.admin.circuits",
    "open_circuit": "retryq_py.admin.circuits",
    "require_key": "retryq_py.admin.circuits",
    "DeadLetter": "retryq_py.admin.dead_letters",
    "DeadLetterFilter": "retryq_py.admin.dead_letters",
    "ErrorEntry": "retryq_py.admin.dead_letters",
    "dead_letter_list": "retryq_py.admin.dead_letters",
    "dead_letter_match": "retryq_py.admin.dead_letters",
    "dead_letter_purge": "retryq_py.admin.dead_letters",
    "dead_letter_requeue": "retryq_py.admin.dead_letters",
    "error_entries": "retryq_py.admin.dead_letters",
    "item_show": "retryq_py.admin.dead_letters",
    "ENQUEUE_KEYS": "retryq_py.admin.inputs",
    "moment_text": "retryq_py.admin.inputs",
    "parse_duration": "retryq_py.admin.inputs",
    "parse_json": "retryq_py.admin.inputs",
    "parse_json_lines": "retryq_py.admin.inputs",
    "parse_json_object": "retryq_py.admin.inputs",
    "ENQUEUE_CHUNK": "retryq_py.admin.items",
    "STATUSES": "retryq_py.admin.items",
    "CancelFilter": "retryq_py.admin.items",
    "Cancelled": "retryq_py.admin.items",
    "Cleaned": "retryq_py.admin.items",
    "Stats": "retryq_py.admin.items",
    "cancel_items": "retryq_py.admin.items",
    "cleanup": "retryq_py.admin.items",
    "cleanup_due": "retryq_py.admin.items",
    "enqueue": "retryq_py.admin.items",
    "enqueue_many": "retryq_py.admin.items",
    "stats": "retryq_py.admin.items",
    "MigrationRow": "retryq_py.admin.migrations",
    "migrate_apply": "retryq_py.admin.migrations",
    "migrate_rollback": "retryq_py.admin.migrations",
    "migrate_status": "retryq_py.admin.migrations",
    "list_pauses": "retryq_py.admin.pauses",
    "pause": "retryq_py.admin.pauses",
    "pause_key": "retryq_py.admin.pauses",
    "resume": "retryq_py.admin.pauses",
    "clear_rate_limit": "retryq_py.admin.rate_limits",
    "list_rate_limits": "retryq_py.admin.rate_limits",
    "set_rate_limit": "retryq_py.admin.rate_limits",
    "NextRetry": "retryq_py.admin.running",
    "bind_port": "retryq_py.admin.running",
    "listen_error": "retryq_py.admin.running",
    "load_handlers": "retryq_py.admin.running",
    "load_worker_config": "retryq_py.admin.running",
    "run_worker": "retryq_py.admin.running",
    "serve_metrics": "retryq_py.admin.running",
    "DATABASE_ENV": "retryq_py.admin.target",
    "DEFAULT_CONNECT_TIMEOUT": "retryq_py.admin.target",
    "CommandError": "retryq_py.admin.target",
    "DatabaseUnreachable": "retryq_py.admin.target",
    "Declined": "retryq_py.admin.target",
    "ExitCode": "retryq_py.admin.target",
    "Interrupted": "retryq_py.admin.target",
    "NotInstalled": "retryq_py.admin.target",
    "Target": "retryq_py.admin.target",
    "UsageProblem": "retryq_py.admin.target",
    "check": "retryq_py.admin.target",
    "connect": "retryq_py.admin.target",
    "first_line": "retryq_py.admin.target",
    "is_installed": "retryq_py.admin.target",
    "is_refused_value": "retryq_py.admin.target",
    "open_connection": "retryq_py.admin.target",
    "queue": "retryq_py.admin.target",
    "refusal": "retryq_py.admin.target",
    "schema_exists": "retryq_py.admin.target",
    "target": "retryq_py.admin.target",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "DATABASE_ENV",
    "DEFAULT_CONNECT_TIMEOUT",
    "ENQUEUE_CHUNK",
    "ENQUEUE_KEYS",
    "STATUSES",
    "CancelFilter",
    "Cancelled",
    "Cleaned",
    "CommandError",
    "DatabaseUnreachable",
    "DeadLetter",
    "DeadLetterFilter",
    "Declined",
    "ErrorEntry",
    "ExitCode",
    "Interrupted",
    "MigrationRow",
    "NextRetry",
    "NotInstalled",
    "Stats",
    "Target",
    "UsageProblem",
    "bind_port",
    "cancel_items",
    "check",
    "cleanup",
    "cleanup_due",
    "clear_rate_limit",
    "close_circuit",
    "configure_circuit",
    "connect",
    "dead_letter_list",
    "dead_letter_match",
    "dead_letter_purge",
    "dead_letter_requeue",
    "enqueue",
    "enqueue_many",
    "error_entries",
    "first_line",
    "is_installed",
    "is_refused_value",
    "item_show",
    "list_circuits",
    "list_pauses",
    "list_rate_limits",
    "listen_error",
    "load_handlers",
    "load_worker_config",
    "migrate_apply",
    "migrate_rollback",
    "migrate_status",
    "moment_text",
    "open_circuit",
    "open_connection",
    "parse_duration",
    "parse_json",
    "parse_json_lines",
    "parse_json_object",
    "pause",
    "pause_key",
    "queue",
    "refusal",
    "require_key",
    "resume",
    "run_worker",
    "schema_exists",
    "serve_metrics",
    "set_rate_limit",
    "stats",
    "target",
]
