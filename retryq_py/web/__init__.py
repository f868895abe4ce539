"""`retryq web`: a dashboard over the queue, as an ASGI app.

    from retryq_py.web import create_app, web_config

    app = create_app(web_config("postgresql://retryq_admin@db/app", read_only=True))

Mount it in your own Starlette or FastAPI app with
`app.mount("/retryq", create_app(...))`. It needs the `web` extra
(`pip install 'retryq[web]'`). Every action calls a retryq SQL function, so
the database role it connects as decides what it may do (`retryq_admin`).
"""

from retryq_py.web.app import create_app
from retryq_py.web.config import WebConfig, check_listen, is_loopback, web_config

__all__ = ["WebConfig", "check_listen", "create_app", "is_loopback", "web_config"]
