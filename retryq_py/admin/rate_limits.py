"""`retryq rate-limits`: retryq_py.ops's rate limit functions over a Target."""

from __future__ import annotations

from retryq_py import ops
from retryq_py._sql.ops import RateLimit
from retryq_py.admin.target import CommandError, Target, connect


def list_rate_limits(t: Target) -> list[RateLimit]:
    with connect(t) as conn:
        return ops.list_rate_limits(conn, t.schema)


def set_rate_limit(
    t: Target,
    event_type: str,
    plugin: str | None = None,
    *,
    max_leases: int,
    period_seconds: float = 1.0,
) -> None:
    """At most max_leases leases of the key per period_seconds, all workers
    together. The database refuses bad values (InvalidParameterValue)."""
    with connect(t) as conn:
        ops.set_rate_limit(
            conn,
            event_type,
            plugin,
            max_leases=max_leases,
            period_seconds=period_seconds,
            schema=t.schema,
        )


def clear_rate_limit(t: Target, event_type: str, plugin: str | None = None) -> None:
    """CommandError when the key has no rate limit."""
    with connect(t) as conn:
        found = ops.clear_rate_limit(conn, event_type, plugin, schema=t.schema)
    if not found:
        raise CommandError(f"no rate limit for {event_type}/{plugin or '-'}")
