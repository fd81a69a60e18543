"""Puts a process's sync runtime together: the procrastinate app with the tasks of
:mod:`postroom.sync.jobs` on it, and the :class:`~postroom.sync.runtime.Runtime` they run with.

The one place that knows both the runtime and the tasks: ``runtime`` imports no task and
``jobs`` imports only the runtime, so neither imports the other (decision 0011).
"""

from __future__ import annotations

import procrastinate

from postroom.crypto import SecretBox
from postroom.db import Database
from postroom.integrations.oauth import MicrosoftIdentity
from postroom.settings import Settings
from postroom.sync import jobs
from postroom.sync.runtime import Runtime, conninfo
from postroom.sync.worker import JobManager


def build_queue(database: Database) -> procrastinate.App:
    from postroom import metrics

    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=conninfo(database.url)),
        # each job's duration by task and result, for /metrics
        worker_defaults={"worker_middleware": [metrics.job_middleware]},
    )
    app.add_tasks_from(jobs.build_blueprint(), namespace="postroom")
    # a retry gives way to the same job waiting already (postroom.sync.worker.JobManager)
    app.job_manager = JobManager(connector=app.connector)
    return app


def make_runtime(settings: Settings, database: Database, box: SecretBox) -> Runtime:
    key = box.derive(b"graph-client-state")
    return Runtime(
        settings=settings,
        database=database,
        box=box,
        identity=MicrosoftIdentity(settings),
        queue=build_queue(database),
        hmac_key=key,
    )
