"""``dagnn serve``: an HTTP API (v1, JSON) and a search page over a ``Searcher``, for apps and people.

Needs the ``[serve]`` extra (starlette, uvicorn, python-multipart, prometheus-client); nothing else in
``dagnn_runtime`` imports this subpackage, so the base install stays small.

    from dagnn_runtime.server import create_app
    app = create_app("bundle.dagnn", "index/")        # run it with any ASGI server, e.g. uvicorn
"""
from .app import create_app
from .limits import Limits

__all__ = ["create_app", "Limits"]
