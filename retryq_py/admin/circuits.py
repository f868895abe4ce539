"""`retryq circuits`: retryq_py.ops's circuit functions over a Target."""

from __future__ import annotations

from retryq_py import ops
from retryq_py._sql.ops import Circuit
from retryq_py.admin.target import CommandError, Target, UsageProblem, connect


def list_circuits(t: Target) -> list[Circuit]:
    with connect(t) as conn:
        return ops.list_circuits(conn, t.schema)


def open_circuit(
    t: Target, event_type: str, plugin: str | None = None, *, seconds: float | None = None
) -> None:
    with connect(t) as conn:
        ops.open_circuit(conn, event_type, plugin, seconds=seconds, schema=t.schema)


def close_circuit(t: Target, event_type: str, plugin: str | None = None) -> None:
    """CommandError when the key has no circuit."""
    with connect(t) as conn:
        found = ops.close_circuit(conn, event_type, plugin, schema=t.schema)
    if not found:
        raise CommandError(f"no circuit for {event_type}/{plugin or '-'}")


def require_key(event_type: str | None, plugin: str | None, *, default: bool) -> None:
    """A key (event_type, maybe a plugin) or the defaults, never both."""
    if default == (event_type is not None):
        raise UsageProblem("give either --event-type (and --plugin) or --default")
    if default and plugin is not None:
        raise UsageProblem("--plugin goes with --event-type, not --default")


def configure_circuit(
    t: Target,
    event_type: str | None,
    plugin: str | None = None,
    *,
    default: bool = False,
    failure_threshold: int | None = None,
    cooldown_seconds: float | None = None,
    max_cooldown_seconds: float | None = None,
    reset: bool = False,
) -> None:
    """One key's settings, or with `default` (and no event_type) the defaults."""
    require_key(event_type, plugin, default=default)
    with connect(t) as conn:
        ops.configure_circuit(
            conn,
            event_type,
            plugin,
            failure_threshold=failure_threshold,
            cooldown_seconds=cooldown_seconds,
            max_cooldown_seconds=max_cooldown_seconds,
            reset=reset,
            schema=t.schema,
        )
