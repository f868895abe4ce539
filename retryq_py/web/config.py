"""How the dashboard is set up: where the queue is, who may look, whether it may act."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from retryq_py.admin import Target, UsageProblem, target

TOKEN_ENV = "RETRYQ_WEB_TOKEN"
BASIC_AUTH_ENV = "RETRYQ_WEB_BASIC_AUTH"


@dataclass(frozen=True)
class WebConfig:
    """The dashboard's settings.

    `token`: every request carries `Authorization: Bearer TOKEN`, or a browser
    opens any page once with `?token=TOKEN` and keeps it in a cookie.
    `basic_auth`: (user, password) for HTTP basic authentication. With
    neither, anyone who reaches the port may look (and act, unless
    `read_only`): `check_listen` refuses that beyond localhost.
    """

    target: Target
    read_only: bool = False
    token: str | None = None
    basic_auth: tuple[str, str] | None = None
    page_size: int = 50

    @property
    def has_auth(self) -> bool:
        return bool(self.token) or self.basic_auth is not None


def web_config(
    database: str | None,
    schema: str | None = None,
    *,
    read_only: bool = False,
    token: str | None = None,
    basic_auth: str | None = None,
    page_size: int = 50,
) -> WebConfig:
    """A WebConfig from the values a person types; UsageProblem when one is bad.

    `basic_auth` is USER:PASSWORD."""
    if token is not None and not token.strip():
        raise UsageProblem("invalid --token: must not be empty")
    pair: tuple[str, str] | None = None
    if basic_auth is not None:
        user, sep, password = basic_auth.partition(":")
        if not sep or not user or not password:
            raise UsageProblem("invalid --basic-auth: use USER:PASSWORD")
        pair = (user, password)
    if page_size < 1 or page_size > 1000:
        raise UsageProblem("invalid --page-size: must be between 1 and 1000")
    return WebConfig(
        target=target(database, schema),
        read_only=read_only,
        token=token,
        basic_auth=pair,
        page_size=page_size,
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen(host: str, config: WebConfig) -> None:
    """Refuse to listen beyond localhost without authentication."""
    if not is_loopback(host) and not config.has_auth:
        raise UsageProblem(
            f"refusing --host {host} without authentication: set --token (or {TOKEN_ENV})"
            f" or --basic-auth USER:PASSWORD (or {BASIC_AUTH_ENV}), or listen on 127.0.0.1"
        )
