"""`retryq web`: serve the dashboard (the `web` extra) with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from retryq_py import admin
from retryq_py.cli.options import DatabaseOpt, SchemaOpt
from retryq_py.cli.render import err

# retryq_py.web.config's names, repeated so that --help works without the extra.
TOKEN_ENV = "RETRYQ_WEB_TOKEN"
BASIC_AUTH_ENV = "RETRYQ_WEB_BASIC_AUTH"


def web(
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            metavar="ADDRESS",
            help="Listen here; beyond localhost needs --token or --basic-auth.",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", min=0, max=65535, help="Listen on this port.")
    ] = 8080,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Show everything, change nothing.")
    ] = False,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            envvar=TOKEN_ENV,
            show_envvar=True,
            help="Require this token (Authorization: Bearer, or ?token= once in a browser).",
        ),
    ] = None,
    basic_auth: Annotated[
        str | None,
        typer.Option(
            "--basic-auth",
            metavar="USER:PASSWORD",
            envvar=BASIC_AUTH_ENV,
            show_envvar=True,
            help="Require HTTP basic authentication.",
        ),
    ] = None,
) -> None:
    """Serve the dashboard: overview, items, dead letters, circuits, workers."""
    try:
        from retryq_py.web import check_listen, create_app, web_config
    except ImportError as exc:
        raise admin.UsageProblem(
            f"retryq web needs the web extra: pip install 'retryq[web]' ({exc.name} is missing)"
        ) from exc
    import uvicorn

    config = web_config(database, schema, read_only=read_only, token=token, basic_auth=basic_auth)
    check_listen(host, config)
    admin.check(config.target)  # unreachable or not installed: say so now, not per page
    sock = admin.bind_port(host, port, "--port")
    shown = f"[{host}]" if ":" in host else host
    err.print(
        f"retryq web: {config.target.describe()} on http://{shown}:{sock.getsockname()[1]}/"
        + (" (read-only)" if read_only else "")
        + ("" if config.has_auth else " without authentication")
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, loopback_only=not config.has_auth),
            log_level="warning",
            access_log=False,
        )
    )
    server.run(sockets=[sock])
