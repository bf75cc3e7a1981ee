"""The console's web app: login, the pages, the live updates and the parking lot's actions.

Every page is rendered whole on the server (readable with JavaScript off); a page's live parts
are re-rendered here and pushed as server-sent events (`/live/<part>`), which the page's small
script swaps in. Nothing in the browser polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventshop.console import views
from eventshop.console.auth import COOKIE, GatewayLogin, LoginRefused, Operator
from eventshop.console.settings import ConsoleSettings
from eventshop.console.sources import Sources
from eventshop.platform.http import ApiError, install_conventions
from eventshop.platform.observability.logging import get_logger

log = get_logger(__name__)

templates = Environment(
    loader=PackageLoader("eventshop.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)
templates.globals["pretty"] = views.pretty_body

#: every page: scripts and styles of the console only, never framed by another site
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
        " frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class SecurityHeaders:
    """SECURITY_HEADERS on every answer (a pure ASGI middleware: the live streams pass as they
    are, which starlette's BaseHTTPMiddleware would wrap)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)


class NotLoggedIn(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


async def session(request: Request) -> tuple[Operator, str]:
    """The admin at the console and the token of their session; else to the login page (no
    session), or 403 (not an admin)."""
    login: GatewayLogin = request.app.state.login
    token = request.cookies.get(COOKIE, "")
    who = await login.who(token) if token else None
    if who is None:
        if request.url.path.startswith("/live/"):
            raise ApiError(401, "unauthenticated", "log in at /login first")
        raise NotLoggedIn(request.url.path)
    if not who.is_admin:
        log.warning("console.refused", user_id=who.user_id, path=request.url.path)
        raise ApiError(403, "forbidden", "the console is for administrators only")
    return who, token


Admin = Annotated[tuple[Operator, str], Depends(session)]


def page(name: str, status: int = 200, **values: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**values), status_code=status)


def console_app(settings: ConsoleSettings | None = None, sources: Sources | None = None) -> FastAPI:
    settings = settings or ConsoleSettings()
    client = httpx.AsyncClient(base_url=settings.gateway_url, timeout=10)
    login = GatewayLogin(client, check_s=settings.session_check_s)
    src = sources or Sources(client)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await src.close()
            await client.aclose()

    app = FastAPI(
        title="eventshop console", docs_url=None, redoc_url=None, openapi_url=None,
        lifespan=lifespan,
    )  # fmt: skip
    app.mount("/static", StaticFiles(packages=[("eventshop.console", "static")]), name="static")
    app.state.login = login
    install_conventions(app)

    app.add_middleware(SecurityHeaders)

    @app.exception_handler(NotLoggedIn)
    async def to_login(_: Request, exc: NotLoggedIn) -> Response:
        return RedirectResponse(f"/login?next={quote(exc.next_path, safe='/')}", status_code=303)

    def render(name: str, admin: tuple[Operator, str], **values: Any) -> HTMLResponse:
        who, token = admin
        return page(name, operator=who, form_token=login.form_token(token), **values)

    async def form_of(
        request: Request, admin: tuple[Operator, str] | None = None
    ) -> dict[str, str]:
        """An url-encoded form's fields (the last of each); with a session, its anti-forgery
        token checked (the cookie is SameSite=Strict as well)."""
        fields = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
        if admin is not None and not login.form_token_ok(admin[1], fields.get("form_token", "")):
            raise ApiError(403, "forbidden", "this form is stale or not the console's: reload")
        return fields

    # -- login -----------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    async def login_page(next: str = "/") -> HTMLResponse:
        return page("login.html", next=views.safe_next(next), error=None)

    @app.post("/login", response_model=None)
    async def login_submit(request: Request) -> Response:
        fields = await form_of(request)
        target = views.safe_next(fields.get("next", "/"))
        try:
            token = await login.login(fields.get("email", ""), fields.get("password", ""))
        except LoginRefused as refused:
            return page("login.html", status=401, next=target, error=str(refused))
        who = await login.who(token)
        if who is None or not who.is_admin:
            log.warning("console.refused", user_id=who and who.user_id, path="/login")
            await login.logout(token)
            return page("login.html", status=403, next=target, error="administrators only")
        answer = RedirectResponse(target, status_code=303)
        answer.set_cookie(
            COOKIE, token, httponly=True, samesite="strict", secure=settings.secure_cookie,
            path="/",
        )  # fmt: skip
        log.info("console.login", user_id=who.user_id)
        return answer

    @app.post("/logout")
    async def logout(request: Request, admin: Admin) -> RedirectResponse:
        await form_of(request, admin)
        await login.logout(admin[1])
        answer = RedirectResponse("/login", status_code=303)
        answer.delete_cookie(COOKIE, path="/")
        return answer

    # -- pages -----------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    async def saga(admin: Admin) -> HTMLResponse:
        return render("saga.html", admin, live=await views.saga_part(src))

    @app.get("/services", response_class=HTMLResponse)
    async def services(admin: Admin) -> HTMLResponse:
        return render("services.html", admin, live=await views.services_part(src))

    @app.get("/parked", response_class=HTMLResponse)
    async def parked(admin: Admin, request: Request) -> HTMLResponse:
        where = views.ParkedFilter.of(request.query_params)
        return render("parked.html", admin, where=where, rows=await src.parked(where))

    @app.get("/parked/{service}/{event_id}", response_class=HTMLResponse)
    async def parked_one(service: str, event_id: str, admin: Admin) -> HTMLResponse:
        where = views.ParkedFilter(service=service, event_id=event_id)
        rows = await src.parked(where)
        if not rows:
            raise ApiError(404, "not_found", "no such parked message (replayed or purged?)")
        return render("parked_message.html", admin, service=service, parked=rows[0][1])

    @app.get("/parked-action", response_class=HTMLResponse)
    async def confirm(admin: Admin, request: Request) -> HTMLResponse:
        action = views.action_of(request.query_params.get("action", ""))
        where = views.ParkedFilter.of(request.query_params)
        rows = await src.parked(where)
        return render("confirm.html", admin, action=action, where=where, rows=rows)

    @app.post("/parked-action", response_class=HTMLResponse)
    async def act(admin: Admin, request: Request) -> HTMLResponse:
        fields = await form_of(request, admin)
        action = views.action_of(fields.get("action", ""))
        where = views.ParkedFilter.of(fields)
        done = await src.act_on_parked(action, where)
        log.info("console.parked_action", action=action, count=len(done), user_id=admin[0].user_id)
        return render("acted.html", admin, action=action, where=where, done=done)

    @app.get("/orders/{order_id}", response_class=HTMLResponse)
    async def order(order_id: str, admin: Admin, version: int | None = None) -> HTMLResponse:
        history = await src.order_history(admin[1], order_id)
        chosen = version or (history[-1]["version"] if history else None)
        state = await src.order_as_of(admin[1], order_id, chosen) if chosen else None
        correlation = next((h["correlation_id"] for h in history if h["correlation_id"]), None)
        trace = views.trace_rows(src.trace(correlation)) if correlation else []
        return render(
            "order.html", admin, order_id=order_id, history=history, version=chosen,
            state=state, trace=trace,
        )  # fmt: skip

    # -- live parts: server-sent events ---------------------------------------------------
    parts: dict[str, Callable[[Sources], Awaitable[dict[str, Any]]]] = {
        "saga": views.saga_part,
        "services": views.services_part,
    }

    @app.get("/live/{part}")
    async def live(part: str, request: Request, admin: Admin) -> StreamingResponse:
        if part not in parts:
            raise ApiError(404, "not_found", f"no live part {part}")
        template = templates.get_template(f"_{part}.html")

        async def events() -> AsyncIterator[str]:
            last = ""
            quiet = 0.0
            while not await request.is_disconnected():
                html = template.render(live=await parts[part](src))
                if html != last:
                    last, quiet = html, 0.0
                    data = "".join(f"data: {line}\n" for line in html.split("\n"))
                    yield f"event: update\n{data}\n"
                elif quiet >= 15:
                    quiet = 0.0
                    yield ": still here\n\n"  # through proxies that close idle streams
                await asyncio.sleep(settings.live_interval_s)
                quiet += settings.live_interval_s

        return StreamingResponse(
            events(), media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )  # fmt: skip

    return app
