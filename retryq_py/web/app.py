"""The dashboard's routes: each reads through retryq_py.web.data or acts
through one retryq_py.admin function (so through one SQL function), then
renders a template. A request from htmx (`HX-Request`) for a part of a page
gets that part only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, QueryParams
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from retryq_py import admin
from retryq_py._sql.decode import json_text
from retryq_py._sql.timestamps import infinite_text
from retryq_py.web import data
from retryq_py.web.auth import AuthMiddleware, LoopbackHostMiddleware
from retryq_py.web.config import WebConfig

HERE = Path(__file__).parent
STATUSES = admin.STATUSES
# The most items a confirmed action names: the id arrays the SQL functions
# take (their default bound, see README "Sizes are bounded"). A filter that
# matches more is for the CLI, which acts by the filter itself.
AT_ONCE = 100_000
# The most of a payload the item page shows (characters of its indented JSON):
# a 16 MiB payload made a page of 45 MB; the rest is one link away.
SHOWN_MAX = 256 * 1024


def _when(value: datetime | str | None) -> str:
    """UTC to the second (the page says UTC); a string not in ISO 8601 as is."""
    return admin.moment_text(value, timezone.utc)


def _ago(value: datetime | None) -> str:
    if value is None:
        return ""
    infinite = infinite_text(value)
    if infinite is not None:  # no span to tell
        return infinite
    return _span((datetime.now(timezone.utc) - value).total_seconds())


def _span(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if math.isinf(seconds):  # an infinite time somewhere (see retry_queue_due)
        return "infinity"
    if math.isnan(seconds):
        return ""
    s = abs(int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _seconds(value: float) -> str:
    """A period for a person: `1s`, `0.5s`, `3600s (1h00m)`."""
    text = f"{value:g}s"
    return text if value < 60 else f"{text} ({_span(value)})"


def _pretty(value: Any) -> str:
    """JSON for a person (the template escapes it, as any text)."""
    # a value Python could not decode (RawJson) is shown as the server sent it
    return json_text(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(HERE / "templates"))
    t.env.filters["when"] = _when
    t.env.filters["ago"] = _ago
    t.env.filters["span"] = _span
    t.env.filters["pretty"] = _pretty
    t.env.filters["seconds"] = _seconds
    t.env.globals["statuses"] = STATUSES
    return t


def _text(params: QueryParams | FormData, name: str) -> str | None:
    value = params.get(name)
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()


def _int(params: QueryParams | FormData, name: str) -> int | None:
    value = _text(params, name)
    if value is None:
        return None
    return admin.parse_int(value, name)  # within a bigint, or a 400 naming it


def _float(params: QueryParams | FormData, name: str) -> float | None:
    value = _text(params, name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise admin.UsageProblem(f"invalid {name}: {value!r} is not a number")
    return number


def _duration(params: QueryParams | FormData, name: str) -> timedelta | None:
    value = _text(params, name)
    return None if value is None else admin.parse_duration(value, name)


def _ids(params: QueryParams | FormData, name: str = "ids") -> tuple[int, ...]:
    value = _text(params, name) or ""
    try:
        return tuple(int(v) for v in value.replace(",", " ").split())
    except ValueError:
        raise admin.UsageProblem(
            f"invalid {name}: {value!r}: use ids separated by spaces"
        ) from None


def _dead_filter(params: QueryParams | FormData) -> admin.DeadLetterFilter:
    return admin.DeadLetterFilter(
        ids=_ids(params),
        event_type=_text(params, "event_type"),
        plugin=_text(params, "plugin"),
        error_code=_text(params, "error_code"),
        older_than=_duration(params, "older_than"),
    )


def _dead_filter_query(params: QueryParams | FormData) -> dict[str, str]:
    names = ("ids", "event_type", "plugin", "error_code", "older_than")
    return {n: v for n in names if (v := _text(params, n)) is not None}


def _item_filter(params: QueryParams | FormData) -> data.ItemFilter:
    status = _text(params, "status")
    if status is not None and status not in STATUSES:
        raise admin.UsageProblem(f"invalid status {status!r}: use one of {', '.join(STATUSES)}")
    return data.ItemFilter(
        status=status,
        event_type=_text(params, "event_type"),
        plugin=_text(params, "plugin"),
        error_code=_text(params, "error_code"),
        correlation_id=_text(params, "correlation_id"),
        older_than=_duration(params, "older_than"),
    )


ITEM_FILTER_NAMES = ("status", "event_type", "plugin", "error_code", "correlation_id", "older_than")


def _item_filter_query(params: QueryParams | FormData) -> dict[str, str]:
    return {n: v for n in ITEM_FILTER_NAMES if (v := _text(params, n)) is not None}


def _cancellable_filter(filt: data.ItemFilter) -> str | None:
    """Why the items screen's filter cannot choose items to cancel, or None."""
    if filt.status is not None and filt.status not in ("pending", "processing"):
        return (
            f"cancel acts only on pending and processing items, not {filt.status}:"
            " pick one of those statuses or any"
        )
    chosen = (filt.event_type, filt.plugin, filt.error_code, filt.correlation_id, filt.older_than)
    if all(v is None for v in chosen):
        return (
            "cancel needs a filter: event type, plugin, error code, correlation id or older"
            " than (older than 0s selects every pending and processing item)"
        )
    return None


class Dashboard:
    """The routes over one WebConfig."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self.templates = _templates()

    @property
    def t(self) -> admin.Target:
        return self.config.target

    def render(
        self,
        request: Request,
        name: str,
        context: Mapping[str, Any],
        status_code: int = 200,
    ) -> Response:
        ctx = {
            "base": request.scope.get("root_path", "").rstrip("/"),
            "read_only": self.config.read_only,
            "where": self.t.describe(),
            "partial": request.headers.get("hx-request") == "true"
            and request.headers.get("hx-boosted") != "true",
            "message": request.query_params.get("message"),
            **context,
        }
        return self.templates.TemplateResponse(request, name, ctx, status_code=status_code)

    def redirect(self, request: Request, path: str, message: str, **query: str) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        return RedirectResponse(f"{base}{path}?{urlencode({**query, 'message': message})}", 303)

    def _writable(self) -> None:
        if self.config.read_only:
            raise HTTPException(403, "the dashboard is read-only")

    # --- screens -------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        ov = data.overview(self.t)
        peak = max([h.completed + h.failed for h in ov.hours] + [1])
        return self.render(request, "overview.html", {"ov": ov, "peak": peak, "page": "overview"})

    def items(self, request: Request) -> Response:
        filt = _item_filter(request.query_params)
        before = _int(request.query_params, "before")
        page = data.item_page(self.t, filt, before, self.config.page_size)
        query = {k: v for k, v in request.query_params.items() if k != "before" and v}
        return self.render(
            request,
            "items.html",
            {
                "items": page,
                "filt": filt,
                "q": query,
                "query": urlencode(query),
                "cancel_q": _item_filter_query(request.query_params),
                "can_cancel": _cancellable_filter(filt) is None,
                "page": "items",
            },
        )

    def _cancel_filter(self, form: FormData) -> data.ItemFilter:
        self._writable()
        filt = _item_filter(form)
        problem = _cancellable_filter(filt)
        if problem is not None:
            raise admin.UsageProblem(problem)
        return filt

    async def items_cancel_confirm(self, request: Request) -> Response:
        """Lists the pending and processing items the items screen's filter
        shows, and asks before cancelling them."""
        form = await request.form()
        filt = self._cancel_filter(form)
        rows = await run_in_threadpool(data.cancellable, self.t, filt)
        too_many = len(rows) > AT_ONCE
        return self.render(
            request,
            "cancel_confirm.html",
            {
                "count": len(rows),
                "too_many": too_many,
                "at_once": AT_ONCE,
                "ids": [] if too_many else sorted(r.id for r in rows),
                "rows": rows[:20],
                "q": _item_filter_query(form),
                "page": "items",
            },
        )

    async def items_cancel_apply(self, request: Request) -> Response:
        """Cancels exactly the items the confirmation page listed: when the
        filter shows another set now (one finished, another arrived), it
        cancels nothing and says so. Never without the confirmation."""
        form = await request.form()
        filt = self._cancel_filter(form)
        back = _item_filter_query(form)
        confirmed = _ids(form, "confirmed")
        if not confirmed:
            raise admin.UsageProblem("a cancel needs its confirmation: ask first, then confirm")
        rows = await run_in_threadpool(data.cancellable, self.t, filt)
        if {r.id for r in rows} != set(confirmed):
            return self.redirect(
                request,
                "/items",
                "nothing cancelled: the matching items changed since you confirmed; look again",
                **back,
            )
        # the ids, and the filter's fields the SQL checks again as it cancels
        # (an item whose last error changed meanwhile no longer matches)
        got = await run_in_threadpool(
            admin.cancel_items,
            self.t,
            admin.CancelFilter(
                ids=confirmed,
                event_type=filt.event_type,
                plugin=filt.plugin,
                error_code=filt.error_code,
            ),
        )
        message = f"cancelled {got.cancelled}"
        if got.cancelled < len(confirmed):
            message += f" of {len(confirmed)} (the others finished or were busy meanwhile)"
        return self.redirect(request, "/items", message, **back)

    def item(self, request: Request) -> Response:
        item = admin.item_show(self.t, int(request.path_params["item_id"]))
        return self.render(
            request,
            "item.html",
            {
                "item": item,
                "errors": admin.error_entries(item),
                "page": "items",
                "payload": _pretty(item.event_data),
                "shown_max": SHOWN_MAX,
            },
        )

    def item_payload(self, request: Request) -> Response:
        """The item's event_data as JSON, whole (the item page shows the first
        SHOWN_MAX characters of a large one)."""
        item = admin.item_show(self.t, int(request.path_params["item_id"]))
        body = json_text(item.event_data, ensure_ascii=False, default=str)
        return Response(
            body,
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="item-{item.id}.json"'},
        )

    def dead_letters(self, request: Request) -> Response:
        filt = _dead_filter(request.query_params)
        limit = self.config.page_size
        # the dead letters cleanup moved to the archive: shown, never replayed
        archived = _text(request.query_params, "archived") is not None
        rows = admin.dead_letter_list(self.t, filt, limit, archived=archived)
        return self.render(
            request,
            "dead_letters.html",
            {
                "rows": rows,
                "limit": limit,
                "q": _dead_filter_query(request.query_params),
                "archived": archived,
                "page": "dead_letters",
            },
        )

    async def dead_letters_confirm(self, request: Request) -> Response:
        self._writable()
        form = await request.form()
        action = _text(form, "action")
        if action not in ("requeue", "purge"):
            raise admin.UsageProblem("invalid action: use requeue or purge")
        filt = _dead_filter(form)
        if filt.is_empty():
            raise admin.UsageProblem(
                f"{action} needs a filter: ids, event type, plugin, error code or older than"
                " (older than 0s selects every dead letter)"
            )
        ids = await run_in_threadpool(admin.dead_letter_match, self.t, filt)
        rows = await run_in_threadpool(admin.dead_letter_list, self.t, filt, 20)
        return self.render(
            request,
            "confirm.html",
            {
                "action": action,
                "count": len(ids),
                "too_many": len(ids) > AT_ONCE,
                "at_once": AT_ONCE,
                "ids": [] if len(ids) > AT_ONCE else ids,
                "rows": rows,
                "q": _dead_filter_query(form),
                "page": "dead_letters",
            },
        )

    async def dead_letters_apply(self, request: Request) -> Response:
        """Acts on exactly the dead letters the confirmation page listed: when
        the filter matches another set now (one left, another arrived), it
        does nothing and says so. A requeue may skip the confirmation; a
        purge may not."""
        self._writable()
        form = await request.form()
        action = _text(form, "action")
        if action not in ("requeue", "purge"):
            raise admin.UsageProblem("invalid action: use requeue or purge")
        filt = _dead_filter(form)
        back = _dead_filter_query(form)
        confirmed = _ids(form, "confirmed")
        if action == "purge" and not confirmed:
            raise admin.UsageProblem("a purge needs its confirmation: ask first, then confirm")
        if confirmed:
            matching = await run_in_threadpool(admin.dead_letter_match, self.t, filt)
            if set(matching) != set(confirmed):
                return self.redirect(
                    request,
                    "/dead-letters",
                    f"nothing {action}d: the matching dead letters changed since you"
                    " confirmed; look again",
                    **back,
                )
            filt = admin.DeadLetterFilter(ids=confirmed)
        if action == "requeue":
            count = await run_in_threadpool(admin.dead_letter_requeue, self.t, filt)
            return self.redirect(request, "/dead-letters", f"requeued {count}", **back)
        count = await run_in_threadpool(admin.dead_letter_purge, self.t, filt)
        return self.redirect(request, "/dead-letters", f"purged {count}", **back)

    async def requeue_one(self, request: Request) -> Response:
        self._writable()
        item_id = int(request.path_params["item_id"])
        got = await run_in_threadpool(
            admin.dead_letter_requeue_report, self.t, admin.DeadLetterFilter(ids=(item_id,))
        )
        # why it stayed (its dedupe key or event id held by a live item, busy,
        # not a dead letter): "not a dead letter" for all of these misled
        why = "; ".join(map(got.why, got.skipped)) or "not requeued"
        message = f"requeued {got.requeued}" if got.requeued else why
        return self.redirect(request, f"/items/{item_id}", message)

    async def cancel_one(self, request: Request) -> Response:
        """Cancels one pending or processing item; the form must carry
        confirm=yes (the item page's second click)."""
        self._writable()
        item_id = int(request.path_params["item_id"])
        form = await request.form()
        if _text(form, "confirm") != "yes":
            raise admin.UsageProblem("a cancel needs its confirmation: confirm=yes")
        got = await run_in_threadpool(
            admin.cancel_items, self.t, admin.CancelFilter(ids=(item_id,))
        )
        if got.cancelled:
            message = "cancelled"
        elif item_id in got.skipped:
            status = got.skipped[item_id]
            message = "no such item" if status is None else f"not cancelled: already {status}"
        else:
            message = "not cancelled: busy in another transaction; try again"
        return self.redirect(request, f"/items/{item_id}", message)

    def circuits(self, request: Request) -> Response:
        rows = admin.list_circuits(self.t)
        return self.render(request, "circuits.html", {"rows": rows, "page": "circuits"})

    async def circuit_action(self, request: Request) -> Response:
        self._writable()
        form = await request.form()
        event_type = _text(form, "event_type")
        if event_type is None:
            raise admin.UsageProblem("invalid event_type: must not be empty")
        plugin = _text(form, "plugin")
        key = f"{event_type}/{plugin or '-'}"
        verb = request.path_params["verb"]
        if verb not in ("open", "close"):
            raise HTTPException(404, f"no action {verb!r}: use open or close")
        if verb == "open":
            seconds = _int(form, "seconds")
            await run_in_threadpool(
                lambda: admin.open_circuit(self.t, event_type, plugin, seconds=seconds)
            )
            until = f" for {seconds}s" if seconds else " until closed"
            return self.redirect(request, "/circuits", f"opened {key}{until}")
        await run_in_threadpool(admin.close_circuit, self.t, event_type, plugin)
        return self.redirect(request, "/circuits", f"closed {key}")

    def pauses(self, request: Request) -> Response:
        rows = admin.list_pauses(self.t)
        return self.render(request, "pauses.html", {"rows": rows, "page": "pauses"})

    async def pause_action(self, request: Request) -> Response:
        self._writable()
        form = await request.form()
        event_type, plugin = _text(form, "event_type"), _text(form, "plugin")
        verb = request.path_params["verb"]
        if verb not in ("pause", "resume"):
            raise HTTPException(404, f"no action {verb!r}: use pause or resume")
        # no_plugin: the items without a plugin (key ""), apart from every plugin (None)
        if _text(form, "no_plugin"):
            if plugin is not None:
                raise admin.UsageProblem("give a plugin or tick no plugin, not both")
            plugin = ""
        # the whole queue only when asked for: an empty form must not stop it
        if verb == "pause" and event_type is None and plugin is None and not _text(form, "all"):
            raise admin.UsageProblem("give an event type or a plugin, or tick the whole queue")
        key = admin.pause_key(event_type, plugin)
        if verb == "pause":
            reason = _text(form, "reason")
            new = await run_in_threadpool(
                lambda: admin.pause(self.t, event_type, plugin, reason=reason)
            )
            return self.redirect(
                request, "/pauses", f"paused {key}" if new else f"{key} was already paused"
            )
        await run_in_threadpool(admin.resume, self.t, event_type, plugin)
        return self.redirect(request, "/pauses", f"resumed {key}")

    def rate_limits(self, request: Request) -> Response:
        rows = admin.list_rate_limits(self.t)
        return self.render(request, "rate_limits.html", {"rows": rows, "page": "rate_limits"})

    async def rate_limit_action(self, request: Request) -> Response:
        """set: at most max_leases leases of the key per period_seconds (1 when
        left empty); clear: no limit for the key. The database refuses values
        out of range (400 naming the field); clearing a key without a limit
        is a 404."""
        self._writable()
        form = await request.form()
        verb = request.path_params["verb"]
        if verb not in ("set", "clear"):
            raise HTTPException(404, f"no action {verb!r}: use set or clear")
        event_type = _text(form, "event_type")
        if event_type is None:
            raise admin.UsageProblem("invalid event_type: must not be empty")
        plugin = _text(form, "plugin")
        key = f"{event_type}/{plugin or '-'}"
        if verb == "clear":
            await run_in_threadpool(admin.clear_rate_limit, self.t, event_type, plugin)
            return self.redirect(request, "/rate-limits", f"rate limit {key} removed")
        max_leases = _int(form, "max_leases")
        if max_leases is None:
            raise admin.UsageProblem("invalid max_leases: give the leases allowed per period")
        period = _float(form, "period_seconds")
        period = 1.0 if period is None else period
        await run_in_threadpool(
            lambda: admin.set_rate_limit(
                self.t, event_type, plugin, max_leases=max_leases, period_seconds=period
            )
        )
        return self.redirect(
            request, "/rate-limits", f"rate limit {key}: {max_leases} per {period:g}s"
        )

    def workers(self, request: Request) -> Response:
        window = _duration(request.query_params, "window") or timedelta(hours=1)
        rows = data.workers_seen(self.t, window)
        return self.render(
            request,
            "workers.html",
            {"rows": rows, "window": _span(window.total_seconds()), "page": "workers"},
        )

    # --- errors --------------------------------------------------------------

    def error(self, request: Request, exc: Exception) -> Response:
        status = 500
        if isinstance(exc, HTTPException):
            status, text = exc.status_code, str(exc.detail)
        elif isinstance(exc, admin.UsageProblem):
            status, text = 400, str(exc)
        elif isinstance(exc, admin.DatabaseUnreachable | admin.NotInstalled):
            status, text = 503, str(exc)
        elif isinstance(exc, admin.CommandError):
            status = 404 if str(exc).startswith("no ") else 409
            text = str(exc)
        elif admin.is_refused_value(exc):
            status, text = 400, admin.first_line(exc)
        elif isinstance(exc, psycopg.Error):
            status, text = 500, f"database error: {admin.first_line(exc)}"
        else:
            text = f"{type(exc).__name__}: {admin.first_line(exc)}"
        return self.render(request, "error.html", {"error": text, "page": ""}, status)


def create_app(config: WebConfig, *, loopback_only: bool = False) -> Starlette:
    """The dashboard as an ASGI app; mount it anywhere:
    `Mount("/retryq", app=create_app(config))`.

    `loopback_only`: answer only requests addressed to localhost or a loopback
    address (421 otherwise): what `retryq web` sets when it serves without
    authentication, against DNS rebinding."""
    d = Dashboard(config)
    routes = [
        Route("/", d.overview, name="overview"),
        Route("/items", d.items, name="items"),
        Route("/items/cancel/confirm", d.items_cancel_confirm, methods=["POST"]),
        Route("/items/cancel/apply", d.items_cancel_apply, methods=["POST"]),
        Route("/items/{item_id:int}", d.item, name="item"),
        Route("/items/{item_id:int}/payload.json", d.item_payload, name="item_payload"),
        Route("/items/{item_id:int}/requeue", d.requeue_one, methods=["POST"]),
        Route("/items/{item_id:int}/cancel", d.cancel_one, methods=["POST"]),
        Route("/dead-letters", d.dead_letters, name="dead_letters"),
        Route("/dead-letters/confirm", d.dead_letters_confirm, methods=["POST"]),
        Route("/dead-letters/apply", d.dead_letters_apply, methods=["POST"]),
        Route("/circuits", d.circuits, name="circuits"),
        Route("/circuits/{verb:str}", d.circuit_action, methods=["POST"]),
        Route("/pauses", d.pauses, name="pauses"),
        Route("/pauses/{verb:str}", d.pause_action, methods=["POST"]),
        Route("/rate-limits", d.rate_limits, name="rate_limits"),
        Route("/rate-limits/{verb:str}", d.rate_limit_action, methods=["POST"]),
        Route("/workers", d.workers, name="workers"),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    handlers: dict[Any, Any] = {
        HTTPException: d.error,
        admin.CommandError: d.error,
        psycopg.Error: d.error,
    }
    return Starlette(
        routes=routes,
        middleware=[
            *([Middleware(LoopbackHostMiddleware)] if loopback_only else []),
            Middleware(AuthMiddleware, config=config),
        ],
        exception_handlers=handlers,
    )
