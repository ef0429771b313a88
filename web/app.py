"""The app `claims serve` serves: the HTTP API (api/app.py) and the web pages (web/routes.py).

The API knows nothing of the pages (api/ may not import web/): the API's factory is given
the pages' router here, and serves it with the same middleware, lifespan and services (and
its fast lane: a claim's page drawn before is answered past FastAPI's routing).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from api.app import create_app as create_api
from web.routes import FORM_PATHS, PageCache, router


def create_app(*args: Any, **kwargs: Any) -> FastAPI:
    """`api.app.create_app` with the pages: the same arguments."""
    app = create_api(*args, routers=(router,), form_paths=FORM_PATHS, **kwargs)
    app.state.web_pages = PageCache()  # the pages drawn lately (web/routes.py)
    return app


def worker_app(writer_socket: str | None = None, hosts_writer: bool = False) -> FastAPI:
    """An API worker of `claims serve --workers N`, with the pages."""
    return create_app(run_projections=False, writer_socket=writer_socket, hosts_writer=hosts_writer)
