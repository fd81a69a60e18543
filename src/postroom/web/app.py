"""The FastAPI application factory: settings, database, templates, routers, error pages.

Views are thin: parse the form, call a keyword-only service with the caller's workspace id,
render a template. Every error becomes a page in plain words (or JSON for API paths); no
traceback, token or secret ever reaches a response or a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from postroom import __version__
from postroom.crypto import SecretBox, load_or_create_key, load_or_create_text_secret
from postroom.db import Database, migrate, open_database
from postroom.settings import Settings, load_settings
from postroom.web import logs
from postroom.web.deps import render, templates
from postroom.web.headers import SecurityHeaders, security_headers
from postroom.web.inputs import refuse_nul
from postroom.web.security import BadCsrf, Forbidden, NotSignedIn

log = logging.getLogger("postroom.web")
HERE = Path(__file__).parent


def create_app(
    settings: Settings | None = None,
    *,
    database: Database | None = None,
    run_worker: bool = False,
) -> FastAPI:
    """The web application. ``run_worker`` also runs a job worker in this process (the
    embedded default, ``postroom serve``); ``postroom web`` and ``postroom worker`` split them."""
    settings = settings or load_settings()
    logs.install()
    data_dir = settings.data_dir
    session_secret = load_or_create_text_secret(
        settings.secret_key.get_secret_value() if settings.secret_key else None,
        data_dir / "session.key",
    )
    box = SecretBox(
        load_or_create_key(
            settings.token_key.get_secret_value() if settings.token_key else None,
            data_dir / "token.key",
        )
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from postroom.sync.queue import make_runtime
        from postroom.sync.runtime import install
        from postroom.sync.worker import run_worker as run_job_worker

        own = app.state.db is None
        if own:
            app.state.db = open_database(settings)
            migrate(app.state.db.engine)
        runtime = make_runtime(settings, app.state.db, box)
        install(runtime)
        app.state.runtime = runtime
        worker: asyncio.Task[None] | None = None
        try:
            async with runtime.queue.open_async(), runtime.shared_graph_http():
                if run_worker:
                    worker = asyncio.create_task(
                        run_job_worker(  # again after the database dropped it
                            runtime.queue,
                            concurrency=settings.worker_concurrency,
                            install_signal_handlers=False,
                            shutdown_graceful_timeout=30,
                            name="postroom-serve",
                        )
                    )
                yield
                if worker is not None:
                    worker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await worker
        finally:
            if own:
                app.state.db.dispose()

    app = FastAPI(
        title="Postroom",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.api_docs else None,
        dependencies=[Depends(refuse_nul)],
    )
    app.state.settings = settings
    app.state.db = database
    app.state.box = box
    app.state.templates = templates()
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret,
        session_cookie="postroom_session",
        max_age=settings.session_max_age,
        same_site="lax",
        https_only=settings.cookie_secure,
    )
    app.add_middleware(SecurityHeaders, settings=settings)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    from postroom.accounts import views as account_views
    from postroom.activity import charts_views
    from postroom.activity import views as activity_views
    from postroom.alerts import views as alert_views
    from postroom.categories import transfer_views as category_transfer_views
    from postroom.categories import views as category_views
    from postroom.integrations import connect as integration_connect
    from postroom.integrations import removal as integration_removal
    from postroom.integrations import setup as integration_setup
    from postroom.integrations import shadow_views as integration_shadow
    from postroom.integrations import views as integration_views
    from postroom.learning import views as learning_views
    from postroom.sync import webhooks
    from postroom.web import health, help_pages

    app.include_router(health.router)
    app.include_router(webhooks.router)
    app.include_router(account_views.router)
    app.include_router(alert_views.router)
    # connect first: its fixed paths (/integrations/new…) before the views' /integrations/{id}
    app.include_router(integration_connect.router)
    app.include_router(integration_views.router)
    app.include_router(integration_removal.router)
    app.include_router(integration_shadow.router)
    app.include_router(integration_setup.router)
    app.include_router(category_views.router)
    app.include_router(category_transfer_views.router)
    app.include_router(activity_views.router)
    app.include_router(charts_views.router)
    app.include_router(learning_views.router)
    app.include_router(help_pages.router)

    @app.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        if isinstance(request.session.get("uid"), str):
            return RedirectResponse("/integrations", status_code=303)
        return RedirectResponse("/signin", status_code=303)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        from urllib.parse import quote

        return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return render(request, "error.html", 403, title="Not allowed", message=str(exc))

    @app.exception_handler(BadCsrf)
    async def bad_csrf(request: Request, exc: BadCsrf) -> Response:
        return render(
            request,
            "error.html",
            400,
            title="This form has expired",
            message="The page was open too long or came from elsewhere. Go back, reload the "
            "page and try again. Nothing was changed.",
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_input(request: Request, exc: RequestValidationError) -> Response:
        fields = sorted({str(e.get("loc", ["", "?"])[-1]) for e in exc.errors()})
        return render(
            request,
            "error.html",
            400,
            title="Some fields could not be read",
            message="Check these fields and try again: " + ", ".join(fields) + ". "
            "Nothing was changed.",
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        titles = {404: "Not found", 405: "Not allowed", 400: "Bad request"}
        message = exc.detail if isinstance(exc.detail, str) else "The request was not valid."
        if exc.status_code == 404:
            message = "There is nothing here, or it belongs to another workspace."
        return render(
            request,
            "error.html",
            exc.status_code,
            title=titles.get(exc.status_code, "Error"),
            message=message,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        reference = uuid.uuid4().hex[:12]
        log.error(
            "unexpected error %s on %s %s: %s",
            reference,
            request.method,
            request.url.path,
            type(exc).__name__,
        )
        response = render(
            request,
            "error.html",
            500,
            title="Something went wrong",
            message=f"Nothing was saved. If it happens again, report reference {reference}.",
        )
        # This handler runs outside the middleware stack: add the headers here too.
        response.headers.update(security_headers(settings))
        return response

    return app
