"""The search server: a FastAPI app factory (no globals), its schemas and the web page."""

from __future__ import annotations

from unite.server.config import LOOPBACK_HOSTS, ServerConfig

__all__ = ["LOOPBACK_HOSTS", "ServerConfig", "create_app"]


def create_app(*args, **kwargs):  # noqa: ANN002, ANN003 (see unite.server.app.create_app)
    """Build the FastAPI app; see :func:`unite.server.app.create_app`."""
    from unite.server.app import create_app as factory

    return factory(*args, **kwargs)
