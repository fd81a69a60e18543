"""Probes for load balancers and orchestrators, and the Prometheus scrape.

* ``/healthz`` (in :mod:`postroom.web.app`): the process answers. No database involved, so a
  restart of PostgreSQL does not get every web process killed by its liveness probe.
* ``/readyz``: ready to do the work — PostgreSQL answers, its schema is at the newest
  migration (a web process of a newer version before ``migrate`` ran is not ready), and a
  worker's heartbeat is recent (procrastinate's ``procrastinate_workers`` table: every worker,
  including the one ``postroom serve`` runs in-process, updates it every 10 s). 200 or 503 with
  each check's result; no names, addresses or secrets.
* ``/metrics``: the Prometheus text format (:mod:`postroom.metrics`) — this process's counters
  plus the state read from PostgreSQL. Only for ``Authorization: Bearer <POSTROOM_METRICS_TOKEN>``
  (401 otherwise); without a token configured it does not exist (404).
"""

from __future__ import annotations

import functools
import hmac
import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from postroom import metrics
from postroom.db import Database
from postroom.settings import Settings

log = logging.getLogger("postroom.health")
router = APIRouter()


@functools.cache
def migration_head() -> str | None:
    """The newest Alembic revision this version of Postroom ships."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent.parent / "migrations"))
    return ScriptDirectory.from_config(config).get_current_head()


def readiness(database: Database, settings: Settings) -> dict[str, dict[str, Any]]:
    """Each check: ``ok`` and a short, safe detail."""
    checks: dict[str, dict[str, Any]] = {}
    try:
        with database.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            checks["database"] = {"ok": True}
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            head = migration_head()
            checks["migrations"] = {
                "ok": version == head,
                "detail": f"at {version}, newest {head}",
            }
            age = conn.execute(
                text(
                    "SELECT EXTRACT(EPOCH FROM now() - max(last_heartbeat)) "
                    "FROM procrastinate_workers"
                )
            ).scalar()
    except Exception as exc:  # unreachable, or the schema is missing: not ready, never a 500
        log.warning("readyz: the database did not answer (%s)", type(exc).__name__)
        checks.setdefault("database", {"ok": False, "detail": type(exc).__name__})
        checks.setdefault("migrations", {"ok": False, "detail": "unknown"})
        checks["worker"] = {"ok": False, "detail": "unknown"}
        return checks
    if age is None:
        checks["worker"] = {"ok": False, "detail": "no worker is running"}
    else:
        seconds = max(float(age), 0.0)
        checks["worker"] = {
            "ok": seconds <= settings.ready_worker_seconds,
            "detail": f"last heartbeat {seconds:.0f} s ago",
        }
    return checks


@router.get("/readyz", include_in_schema=False)
def readyz(request: Request) -> Response:
    checks = readiness(request.app.state.db, request.app.state.settings)
    ready = all(check["ok"] for check in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


def bearer_matches(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


@router.get("/metrics", include_in_schema=False)
def scrape(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if settings.metrics_token is None:
        raise StarletteHTTPException(status_code=404)
    if not bearer_matches(
        request.headers.get("authorization"), settings.metrics_token.get_secret_value()
    ):
        return Response(
            "A bearer token is required.\n",
            status_code=401,
            media_type="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    registry: CollectorRegistry | None = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        registry = metrics.database_registry(request.app.state.db)
        request.app.state.metrics_registry = registry
    return Response(
        metrics.exposition(metrics.process_registry(), registry),
        media_type=CONTENT_TYPE_LATEST,
        headers={"Cache-Control": "no-store"},
    )
