"""pmq-dashboard: a web dashboard for a pmq deployment.

``pmq dashboard`` serves it; :func:`create_app` builds the ASGI application
for any other server (it needs a callable that makes a
:class:`pmq_core.Admin`)."""

from pmq_dashboard.app import create_app

__all__ = ["create_app"]
