"""Authentication and request-forgery checks, as one ASGI middleware."""

from __future__ import annotations

import base64
import binascii
import secrets
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from retryq_py.web.config import WebConfig, is_loopback

COOKIE = "retryq_token"
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def _same(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode(), b.encode())


class AuthMiddleware:
    """Lets a request through when the config's token or basic auth says so.

    A browser given the token once in the query string (`?token=...`) gets it
    back as an HttpOnly, SameSite=Strict cookie and is redirected to the same
    address without it. An unsafe method coming from another origin is refused
    whatever the credentials (a browser sends basic auth and cookies along)."""

    def __init__(self, app: ASGIApp, config: WebConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["method"] in _UNSAFE and not _same_origin(headers):
            await PlainTextResponse("cross-origin request refused", 403)(scope, receive, send)
            return
        response = self._check(scope, headers)
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    def _check(self, scope: Scope, headers: Headers) -> Response | None:
        cfg = self.config
        if not cfg.has_auth:
            return None
        authorization = headers.get("authorization", "")
        scheme, _, value = authorization.partition(" ")
        if cfg.token:
            if scheme.lower() == "bearer" and _same(value.strip(), cfg.token):
                return None
            if _same(_cookie(headers, COOKIE), cfg.token):
                return None
            query = dict(parse_qsl(scope.get("query_string", b"").decode()))
            if _same(query.get("token", ""), cfg.token):
                rest = urlencode({k: v for k, v in query.items() if k != "token"})
                # one leading slash: "//host/x" or "/\\host/x" would send the
                # browser, and its token-bearing address, to another site
                path = "/" + scope["path"].lstrip("/\\")
                redirect = RedirectResponse(path + (f"?{rest}" if rest else ""), 303)
                redirect.set_cookie(
                    COOKIE,
                    cfg.token,
                    httponly=True,
                    samesite="strict",
                    path=scope.get("root_path") or "/",
                )
                return redirect
        if cfg.basic_auth is not None and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = password = ""
            if _same(user, cfg.basic_auth[0]) & _same(password, cfg.basic_auth[1]):
                return None
        challenge = {"WWW-Authenticate": 'Basic realm="retryq"'} if cfg.basic_auth else {}
        message = "authentication required"
        if cfg.token:
            message += ": open this page with ?token=TOKEN once, or send Authorization: Bearer"
        return PlainTextResponse(message, 401, headers=challenge)


def _cookie(headers: Headers, name: str) -> str:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


def _same_origin(headers: Headers) -> bool:
    """True unless the browser says the request comes from another origin."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = headers.get("host", "")
    return origin.split("://", 1)[-1] == host


class LoopbackHostMiddleware:
    """Refuses (421) a request whose Host header names anything but this
    machine: localhost, a name under .localhost, or a loopback address.

    For a dashboard on 127.0.0.1 without authentication, which trusts whoever
    reaches the port. A page of another site reaches that port too by DNS
    rebinding (its own name made to resolve to 127.0.0.1), and its requests,
    reads and actions alike, then carry that site's name as Host. The same
    defence as the allowed-hosts lists of local development servers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _local_host(Headers(scope=scope).get("host", "")):
            response = PlainTextResponse(
                "refused: this dashboard answers only to localhost or a loopback address"
                " (start it with --token or --basic-auth to serve other names)",
                421,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _local_host(host: str) -> bool:
    """Whether a Host header ('name', 'name:port', '[v6]:port') names this machine."""
    if host.startswith("["):
        name, _, port = host.partition("]")
        name, port = name + "]", port.removeprefix(":")
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    else:
        name, port = host, ""
    if port and not port.isdigit():
        return False
    name = name.lower().rstrip(".")
    return bool(name) and (name.endswith(".localhost") or is_loopback(name))
