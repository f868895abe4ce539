"""`retryq pause`, `retryq resume`, `retryq pauses`: retryq_py.ops's pause
functions over a Target."""

from __future__ import annotations

from retryq_py import ops
from retryq_py._sql import compose
from retryq_py._sql import ops as _q
from retryq_py._sql.ops import Pause
from retryq_py.admin.target import CommandError, Target, connect


def list_pauses(t: Target) -> list[Pause]:
    with connect(t) as conn:
        return ops.list_pauses(conn, t.schema)


def pauses_held(t: Target) -> tuple[list[Pause], int]:
    """Every pause, and how many distinct items they hold back together (an
    item under two pauses is in both rows' held_count, once in this total)."""
    with connect(t) as conn:
        rows = ops.list_pauses(conn, t.schema)
        held = conn.execute(compose(_q.HELD_BACK, t.schema)).fetchone()
    return rows, int(held[0]) if held else 0


def pause(
    t: Target,
    event_type: str | None = None,
    plugin: str | None = None,
    *,
    reason: str | None = None,
) -> bool:
    """True when newly paused, False when the key already was."""
    with connect(t) as conn:
        return ops.pause(conn, event_type, plugin, reason=reason, schema=t.schema)


def resume(t: Target, event_type: str | None = None, plugin: str | None = None) -> None:
    """CommandError when the key is not paused (naming the pauses there are)."""
    with connect(t) as conn:
        if ops.resume(conn, event_type, plugin, schema=t.schema):
            return
        there = ops.list_pauses(conn, t.schema)
    keys = ", ".join(pause_key(z.event_type, z.plugin_name) for z in there) or "none"
    raise CommandError(f"{pause_key(event_type, plugin)} is not paused (paused: {keys})")


def pause_key(event_type: str | None, plugin: str | None) -> str:
    """How the CLI names a pause: `the whole queue`, `X`, `X/plugin P`,
    `plugin P`, and for plugin "" (the items without a plugin) `X/no plugin`
    or `the items without a plugin`."""
    if event_type is None and plugin is None:
        return "the whole queue"
    if event_type is None:
        return "the items without a plugin" if plugin == "" else f"plugin {plugin}"
    if plugin is None:
        return event_type
    return f"{event_type}/no plugin" if plugin == "" else f"{event_type}/plugin {plugin}"
