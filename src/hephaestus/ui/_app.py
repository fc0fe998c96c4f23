"""The dashboard's web application: Starlette routes over a client-mode `Hephaestus` app.

Pages are rendered on the server (Jinja2); a small vendored script polls a
JSON endpoint to refresh the live parts of a page, so nothing is built and
everything works offline. The app never executes a step: its `Hephaestus` is
in client mode (`runner=None`), so resume, cancel and retry are written for
the runners on the storage to carry out.

Actions (POST) need the token the server was started with, presented as an
`Authorization: Bearer` or `X-Hephaestus-Token` header, a `token` form
field, or the cookie the sign-in form sets. Without it they are refused with
HTTP 403 and change nothing; a server started without a token is read-only.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from hephaestus.app import Hephaestus
from hephaestus.core.definition import WorkflowDefinition
from hephaestus.core.instance import Instance, Status
from hephaestus.errors import HephaestusError, InstanceNotFoundError
from hephaestus.runners._shell import DefinitionCache
from hephaestus.storage.base import Storage
from hephaestus.ui._graph import MARKS, graph_svg
from hephaestus.ui._views import (
    ListFilters,
    StatusCounts,
    encode_cursor,
    find_stuck,
    history_rows,
    parse_filters,
)

__all__ = ["COOKIE", "create_app"]

#: The cookie the sign-in form sets to the token.
COOKIE = "hephaestus_ui_token"
#: How long a running instance may go unclaimed, or a timer overdue, before it is "stuck".
STUCK_GRACE = 30.0


def create_app(
    storage: Storage,
    *,
    token: str | None = None,
    poll_interval: float = 2.0,
    stuck_grace: float = STUCK_GRACE,
) -> Starlette:
    """The dashboard over `storage` (opened and closed with the web app).

    `token` enables the actions for a browser (or client) that presents it;
    `None` serves a read-only dashboard. Workflows are drawn from their
    definitions when they are defined in this process (import their modules
    first: `hephaestus ui --app MODULE`), else from each instance's history.
    """
    app = Hephaestus(storage=storage, runner=None, facade=False)
    dashboard = _Dashboard(app, token, poll_interval, stuck_grace)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with app:
            yield

    async def guard(request: Request, call_next: Any) -> Response:
        # A POST from another site's page is refused before it reaches an action.
        if request.method == "POST" and not _same_origin(request):
            return dashboard._refused(request, "act on", "(another site's request)")
        response: Response = await call_next(request)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    static = resources.files("hephaestus.ui").joinpath("static")
    return Starlette(
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)],
        routes=[
            Route("/", dashboard.instances),
            Route("/api/instances", dashboard.instances_json),
            Route("/instances/{instance_id}/live", dashboard.instance_json),
            Route("/instances/{instance_id}/retry", dashboard.retry, methods=["POST"]),
            Route("/instances/{instance_id}/cancel", dashboard.cancel, methods=["POST"]),
            Route("/instances/{instance_id}/resume", dashboard.resume, methods=["POST"]),
            Route("/instances/{instance_id}", dashboard.instance),
            Route("/runners", dashboard.runners),
            Route("/api/runners", dashboard.runners_json),
            Route("/login", dashboard.login, methods=["GET", "POST"]),
            Route("/logout", dashboard.logout, methods=["POST"]),
            Mount("/static", StaticFiles(directory=str(static)), name="static"),
        ],
        lifespan=lifespan,
    )


def _same_origin(request: Request) -> bool:
    """Whether a request's `Origin` (when the browser sends one) is this server."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


class _Dashboard:
    def __init__(
        self, app: Hephaestus, token: str | None, poll_interval: float, stuck_grace: float
    ) -> None:
        self.app = app
        self.token = token or None
        self.poll_ms = int(poll_interval * 1000)
        self.stuck_grace = stuck_grace
        self.counts = StatusCounts(app.storage)
        self.definitions = DefinitionCache()
        self.templates = Environment(
            loader=PackageLoader("hephaestus.ui", "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["when"] = _when
        self.templates.filters["ago"] = _ago
        self.templates.filters["seconds"] = _seconds
        self.templates.filters["json"] = _pretty_json
        self.templates.globals["quote"] = lambda text: quote(str(text), safe="")
        self.templates.globals["urlencode"] = urlencode
        self.templates.globals["MARKS"] = MARKS

    # -- rendering -------------------------------------------------------------------------

    def render(self, request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = self.fragment(name, request=request, **values)
        return HTMLResponse(html, status_code=status)

    def fragment(self, name: str, **values: Any) -> str:
        request = values.get("request")
        values.setdefault("authorized", request is not None and self.authorized(request))
        values.setdefault("token_set", self.token is not None)
        values.setdefault("poll_ms", self.poll_ms)
        values.setdefault("now", datetime.now(UTC))
        return self.templates.get_template(name).render(**values)

    def authorized(self, request: Request, form: Mapping[str, str] | None = None) -> bool:
        """Whether `request` presents the token (header, form field or cookie)."""
        if self.token is None:
            return False
        header = request.headers.get("authorization", "")
        presented = [
            header[7:] if header.lower().startswith("bearer ") else "",
            request.headers.get("x-hephaestus-token", ""),
            request.cookies.get(COOKIE, ""),
            (form or {}).get("token", ""),
        ]
        expected = self.token.encode()
        return any(p and secrets.compare_digest(p.encode(), expected) for p in presented)

    # -- instances ---------------------------------------------------------------------------

    async def _list(self, filters: ListFilters) -> dict[str, Any]:
        found = await self.app.storage.query(filters.query())
        page, more = found[: filters.limit], len(found) > filters.limit
        return {
            "filters": filters,
            "instances": page,
            "next_cursor": encode_cursor(page[-1]) if more and page else None,
            "counts": await self.counts.by_status(filters.workflow),
            "workflows": await self.counts.workflows(),
            "statuses": [status.value for status in Status],
        }

    async def instances(self, request: Request) -> Response:
        filters = parse_filters(request.query_params)
        return self.render(request, "instances.html", **await self._list(filters))

    async def instances_json(self, request: Request) -> Response:
        filters = parse_filters(request.query_params)
        values = await self._list(filters)
        return JSONResponse(
            {
                "rows": self.fragment("_rows.html", **values),
                "counts": self.fragment("_counts.html", **values),
                "ids": [instance.id for instance in values["instances"]],
                "next": values["next_cursor"],
            }
        )

    def _definition(self, instance: Instance) -> tuple[WorkflowDefinition | None, str | None]:
        try:
            return self.definitions.get(instance), None
        except HephaestusError as exc:
            return None, (
                f"workflow {instance.workflow} v{instance.workflow_version} is not defined in "
                f"this process ({type(exc).__name__}); the graph is drawn from the instance's "
                "history. Start the dashboard with --app MODULE to draw the whole workflow."
            )

    async def _instance_values(self, instance_id: str) -> dict[str, Any] | None:
        try:
            runs = await self.app.runs(instance_id)
        except (InstanceNotFoundError, HephaestusError):
            return None
        instance = runs[0]
        definition, graph_note = self._definition(instance)
        now = datetime.now(UTC)
        events: list[str] = []
        if definition is not None:
            for key in sorted(instance.waiting_steps):
                events += [e for e in definition.nodes[key].events if e not in events]
        return {
            "instance": instance,
            "earlier_runs": runs[1:],
            "graph": graph_svg(instance, definition, now=now),
            "graph_note": graph_note,
            "history": history_rows(instance),
            "context": json.dumps(
                instance.context.to_dict(), indent=2, ensure_ascii=False, default=repr
            ),
            "events": events,
            "now": now,
        }

    async def instance(self, request: Request) -> Response:
        instance_id = request.path_params["instance_id"]
        values = await self._instance_values(instance_id)
        if values is None:
            return self.render(request, "missing.html", status=404, instance_id=instance_id)
        return self.render(
            request,
            "instance.html",
            done=request.query_params.get("done"),
            problem=request.query_params.get("problem"),
            **values,
        )

    async def instance_json(self, request: Request) -> Response:
        instance_id = request.path_params["instance_id"]
        values = await self._instance_values(instance_id)
        if values is None:
            return JSONResponse({"error": f"no instance {instance_id}"}, status_code=404)
        instance = values["instance"]
        return JSONResponse(
            {
                "id": instance.id,
                "status": instance.status.value,
                "revision": instance.revision,
                "html": self.fragment("_instance_live.html", request=request, **values),
            }
        )

    # -- actions -------------------------------------------------------------------------------

    async def _form(self, request: Request) -> dict[str, str]:
        body = (await request.body()).decode("utf-8", errors="replace")
        return {key: values[-1] for key, values in parse_qs(body).items()}

    def _refused(self, request: Request, action: str, instance_id: str) -> Response:
        reason = (
            "this dashboard was started without a token, so it is read-only"
            if self.token is None
            else "the request did not present the dashboard's token (sign in first)"
        )
        return self.render(
            request,
            "refused.html",
            status=403,
            action=action,
            instance_id=instance_id,
            reason=reason,
        )

    async def _act(self, request: Request, action: str) -> Response:
        instance_id = request.path_params["instance_id"]
        form = await self._form(request)
        if not self.authorized(request, form):
            return self._refused(request, action, instance_id)
        target = f"/instances/{quote(instance_id, safe=':@')}"
        try:
            if action == "retry":
                await self.app.retry(instance_id)
                done = "Retry recorded: a runner runs the failed steps again."
            elif action == "cancel":
                await self.app.cancel(instance_id)
                done = "Cancel recorded."
            else:
                data = None
                if form.get("data", "").strip():
                    try:
                        data = json.loads(form["data"])
                    except json.JSONDecodeError as exc:
                        raise HephaestusError(f"the data is not valid JSON ({exc})") from None
                await self.app.resume(
                    instance_id, form.get("event", ""), step=form.get("step") or None, data=data
                )
                done = f"Event {form.get('event')!r} recorded."
        except HephaestusError as exc:
            return RedirectResponse(
                f"{target}?{urlencode({'problem': f'{type(exc).__name__}: {exc}'})}",
                status_code=303,
            )
        self.counts.invalidate()
        return RedirectResponse(f"{target}?{urlencode({'done': done})}", status_code=303)

    async def retry(self, request: Request) -> Response:
        return await self._act(request, "retry")

    async def cancel(self, request: Request) -> Response:
        return await self._act(request, "cancel")

    async def resume(self, request: Request) -> Response:
        return await self._act(request, "resume")

    # -- runners -----------------------------------------------------------------------------

    async def _runners_values(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        runners = await self.app.runners()
        stuck = await find_stuck(self.app.storage, runners, now=now, grace=self.stuck_grace)
        return {
            "runners": runners,
            "stuck": stuck,
            "grace": self.stuck_grace,
            "epoch": now.timestamp(),
            "now": now,
        }

    async def runners(self, request: Request) -> Response:
        return self.render(request, "runners.html", **await self._runners_values())

    async def runners_json(self, request: Request) -> Response:
        values = await self._runners_values()
        return JSONResponse(
            {
                "html": self.fragment("_runners_live.html", **values),
                "live": sum(1 for r in values["runners"] if r.is_live(values["epoch"])),
            }
        )

    # -- sign in ---------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            back = request.query_params.get("next", "/")
            return self.render(request, "login.html", failed=False, next_url=back)
        form = await self._form(request)
        back = form.get("next", "/")
        if self.token is None or not form.get("token") or not self.authorized(request, form):
            return self.render(request, "login.html", status=403, failed=True, next_url=back)
        local = back.startswith("/") and not back.startswith(("//", "/\\"))
        response = RedirectResponse(back if local else "/", status_code=303)
        response.set_cookie(
            COOKIE, form["token"], httponly=True, samesite="strict", path="/", max_age=12 * 3600
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response


# -- template filters ------------------------------------------------------------------------


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    utc = moment.astimezone(UTC) if moment.tzinfo is not None else moment
    return utc.strftime("%Y-%m-%d %H:%M:%S")


def _ago(moment: datetime | float, now: datetime | float | None = None) -> str:
    at = moment.timestamp() if isinstance(moment, datetime) else moment
    current = (
        time.time() if now is None else (now.timestamp() if isinstance(now, datetime) else now)
    )
    seconds = current - at
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        text = f"{seconds:.0f}s"
    elif seconds < 3600:
        text = f"{seconds // 60:.0f}m"
    elif seconds < 86400:
        text = f"{seconds // 3600:.0f}h"
    else:
        text = f"{seconds // 86400:.0f}d"
    return f"in {text}" if future else f"{text} ago"


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.1f} ms"
    if value < 60:
        return f"{value:.2f} s"
    return f"{value / 60:.1f} min"


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=repr)
