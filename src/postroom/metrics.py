"""Prometheus metrics: what an operator scrapes to see Postroom work, fall behind or stop.

Two kinds, kept apart on purpose:

* **Events counted in the process where they happen** (``prometheus-client`` counters and
  histograms in the default registry): emails processed by outcome and by who decided, Graph
  requests by endpoint family and status, Graph latency, throttling delays, job durations by
  task, webhook notifications by result, token refresh failures by reason. A web process counts
  webhooks; a worker counts jobs, Graph calls and emails (``postroom serve`` does both).
  A scrape sees the counters of the process it reaches: ``postroom worker --metrics-port`` serves
  a worker's own, or, with ``PROMETHEUS_MULTIPROC_DIR`` set for every process on a machine
  (prometheus-client's multiprocess mode), ``/metrics`` adds up all of them
  (:func:`process_registry`).
* **State read from PostgreSQL at scrape time** (:class:`DatabaseCollector`, served only by the
  web process's ``/metrics``): sync lag per integration, integrations by status, stopped
  mailboxes, the job queue's depth by task and status, and the workers' heartbeats. These are
  the same whichever process answers, so nothing has to be added up across workers.

Label values are closed sets chosen here (an endpoint *family*, never a URL; a reason *code*)
or integration ids: never an email address, a folder name or anything from a message.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text

log = logging.getLogger("postroom.metrics")

DECIDERS = ("rule", "model", "conversation", "needs_review", "none")
OUTCOMES = ("done", "failed", "skipped")
WEBHOOK_RESULTS = ("accepted", "spoofed", "unknown_subscription", "malformed", "validation")

EMAILS = Counter(
    "postroom_emails_processed",
    "New emails Postroom finished, by outcome (done, failed, skipped) and by who decided "
    "(rule, model, conversation, needs_review, none).",
    ["outcome", "decided_by"],
)
GRAPH_REQUESTS = Counter(
    "postroom_graph_requests",
    "Requests sent to Microsoft Graph, by endpoint family, method and HTTP status "
    '("network" when no answer came).',
    ["family", "method", "status"],
)
GRAPH_LATENCY = Histogram(
    "postroom_graph_request_duration_seconds",
    "Time Graph took to answer one request (the budget's wait not included).",
    ["family"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
GRAPH_THROTTLE = Histogram(
    "postroom_graph_throttle_delay_seconds",
    "Delays Graph asked for (429, or 503 with Retry-After): count is how often, sum how long.",
    ["family"],
    buckets=(0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
JOB_DURATION = Histogram(
    "postroom_job_duration_seconds",
    "How long a job ran, by task and result (ok, error, cancelled).",
    ["task", "result"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
WEBHOOK_NOTIFICATIONS = Counter(
    "postroom_webhook_notifications",
    "Change notifications received, by result: accepted (a sync was asked for), spoofed "
    "(wrong clientState), unknown_subscription, malformed (a refused request body), "
    "validation (the subscription handshake).",
    ["result"],
)
TOKEN_FAILURES = Counter(
    "postroom_token_refresh_failures",
    "Tokens Microsoft refused, by reason code (the integration gets that status).",
    ["reason"],
)
ALERTS_SENT = Counter(
    "postroom_alerts_sent",
    "Alert messages sent to workspaces, by kind (problem, recovery) and channel.",
    ["kind", "channel"],
)


# ---------------------------------------------------------------------- Graph
def endpoint_family(path_or_url: str) -> str:
    """The closed family of a Graph request path (ids and names never reach a label)."""
    path = urlsplit(path_or_url).path.lower() if "://" in path_or_url else path_or_url.lower()
    path = path.split("?", 1)[0]
    if path.endswith("/$batch"):
        return "batch"
    if "/subscriptions" in path:
        return "subscriptions"
    if "/delta" in path:
        return "delta"
    if "/mastercategories" in path:
        return "categories"
    if "/messages" in path:
        tail = path.rsplit("/", 1)[-1]
        if tail in ("move", "createforward", "send"):
            return {"move": "move", "createforward": "forward", "send": "send"}[tail]
        return "messages"
    if "/mailfolders" in path:
        return "folders"
    if path.startswith(("/users", "/me")) or "/users" in path:
        return "directory"
    return "other"


def graph_answered(family: str, method: str, status: int | str, seconds: float | None) -> None:
    GRAPH_REQUESTS.labels(family, method.upper(), str(status)).inc()
    if seconds is not None:
        GRAPH_LATENCY.labels(family).observe(seconds)


def graph_throttled(family: str, delay: float) -> None:
    GRAPH_THROTTLE.labels(family).observe(max(delay, 0.0))


# ---------------------------------------------------------------------- emails, tokens, webhooks
def decider(decided_by: str, reasons: tuple[str, ...] | list[str] = ()) -> str:
    """The ``decided_by`` label: a model decision recalled from the conversation is its own."""
    if decided_by == "model" and "via:conversation" in reasons:
        return "conversation"
    return decided_by if decided_by in DECIDERS else "none"


def email_processed(outcome: str, decided_by: str) -> None:
    EMAILS.labels(outcome if outcome in OUTCOMES else "failed", decided_by).inc()


def token_refused(reason_code: str) -> None:
    TOKEN_FAILURES.labels(reason_code).inc()


def webhook(result: str, count: int = 1) -> None:
    if count:
        WEBHOOK_NOTIFICATIONS.labels(result).inc(count)


# ---------------------------------------------------------------------- jobs
async def job_middleware(call_next: Callable[[], Awaitable[Any]], context: Any, worker: Any) -> Any:
    """procrastinate worker middleware: each job's duration by task and result."""
    task = str(getattr(context.job, "task_name", "") or "unknown").removeprefix("postroom:")
    started = time.perf_counter()
    result = "error"
    try:
        value = await call_next()
        result = "ok"
        return value
    except BaseException as exc:
        import asyncio

        if isinstance(exc, asyncio.CancelledError):
            result = "cancelled"
        raise
    finally:
        JOB_DURATION.labels(task, result).observe(time.perf_counter() - started)


# ---------------------------------------------------------------------- state from PostgreSQL
class DatabaseCollector(Collector):
    """Gauges computed from PostgreSQL at scrape time (the truth every process shares)."""

    def __init__(self, database: Any) -> None:
        self.database = database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "postroom_database_up", "1 when PostgreSQL answered this scrape's queries."
        )
        try:
            families = list(self._families())
        except Exception as exc:  # a scrape must answer even when the database does not
            log.warning("metrics: the database did not answer (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "postroom_sync_lag_seconds",
            "Per finished integration: seconds since its least recently synced folder in use "
            "was last synced (or set up, if never).",
            labels=["integration"],
        )
        statuses = GaugeMetricFamily(
            "postroom_integrations", "Finished integrations by status.", labels=["status"]
        )
        stopped = GaugeMetricFamily(
            "postroom_mailboxes_stopped",
            "Mailboxes stopped by Microsoft (access denied), per integration.",
            labels=["integration"],
        )
        queue = GaugeMetricFamily(
            "postroom_queue_jobs",
            "Jobs in the queue by task and status (todo, doing).",
            labels=["task", "status"],
        )
        workers = GaugeMetricFamily(
            "postroom_workers", "Workers whose heartbeat is less than a minute old."
        )
        heartbeat = GaugeMetricFamily(
            "postroom_worker_heartbeat_age_seconds",
            "Seconds since the most recent worker heartbeat (absent: no worker registered).",
        )
        with self.database.engine.connect() as conn:
            for integration_id, seconds in conn.execute(
                text(
                    "SELECT fs.integration_id, "
                    "EXTRACT(EPOCH FROM now() - min(coalesce(fs.last_synced_at, fs.baseline_at)))"
                    " FROM folder_syncs fs JOIN integrations i ON i.id = fs.integration_id "
                    "WHERE fs.active AND NOT fs.watch AND i.finished_at IS NOT NULL "
                    "GROUP BY fs.integration_id"
                )
            ):
                lag.add_metric([str(integration_id)], max(float(seconds or 0.0), 0.0))
            for status, count in conn.execute(
                text(
                    "SELECT status, count(*) FROM integrations WHERE finished_at IS NOT NULL "
                    "GROUP BY status"
                )
            ):
                statuses.add_metric([str(status)], float(count))
            for integration_id, count in conn.execute(
                text(
                    "SELECT integration_id, count(*) FROM mailboxes "
                    "WHERE status = 'access_denied' GROUP BY integration_id"
                )
            ):
                stopped.add_metric([str(integration_id)], float(count))
            for task, status, count in conn.execute(
                text(
                    "SELECT task_name, status::text, count(*) FROM procrastinate_jobs "
                    "WHERE status IN ('todo', 'doing') GROUP BY task_name, status"
                )
            ):
                queue.add_metric([str(task).removeprefix("postroom:"), str(status)], float(count))
            alive, age = conn.execute(
                text(
                    "SELECT count(*) FILTER (WHERE last_heartbeat > now() - interval '60 "
                    "seconds'), EXTRACT(EPOCH FROM now() - max(last_heartbeat)) "
                    "FROM procrastinate_workers"
                )
            ).one()
        workers.add_metric([], float(alive or 0))
        if age is not None:
            heartbeat.add_metric([], max(float(age), 0.0))
        yield from (lag, statuses, stopped, queue, workers, heartbeat)


# ---------------------------------------------------------------------- exposition
def process_registry() -> CollectorRegistry:
    """This process's counters, or, in prometheus-client's multiprocess mode
    (``PROMETHEUS_MULTIPROC_DIR``), those of every process on this machine added up."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def exposition(*registries: CollectorRegistry) -> bytes:
    """The text format of several registries, one after the other (their names differ)."""
    return b"".join(generate_latest(r) for r in registries)


def database_registry(database: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(database))
    return registry


def serve_process_metrics(host: str, port: int, *, token: str | None) -> Any:
    """Serve this process's counters on their own port (``postroom worker --metrics-port``), in
    a daemon thread; with a token, only to ``Authorization: Bearer <token>``. Returns the
    server (``shutdown()`` stops it); ``server.server_port`` is the port bound."""
    import hmac
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import CONTENT_TYPE_LATEST
    from prometheus_client.exposition import ThreadingWSGIServer

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Not found.\n"]
        if token is not None:
            scheme, _, given = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), token.encode()
            ):
                start_response(
                    "401 Unauthorized",
                    [
                        ("Content-Type", "text/plain"),
                        ("WWW-Authenticate", 'Bearer realm="metrics"'),
                    ],
                )
                return [b"A bearer token is required.\n"]
        body = exposition(process_registry())
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [body]

    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server
