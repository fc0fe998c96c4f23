"""`hephaestus ui`: the operator dashboard, a web page over the storage (the `ui` extra).

    from hephaestus.ui import create_app
    web = create_app(SQLiteStorage("hephaestus.db"), token="s3cret")   # any ASGI server

It lists instances (filtered, newest change first, paged by index), shows one
instance (its graph coloured by step state, history, context, error and
earlier runs), the runners and what is stuck, and refreshes itself. It is a
client: it never runs a step. Resume, cancel and retry need the token.
"""

from __future__ import annotations

from hephaestus.ui._app import COOKIE, create_app

__all__ = ["COOKIE", "create_app"]
