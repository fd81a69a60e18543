"""STYLE rule 6 held where the web app calls Graph: no transaction stays open in PostgreSQL
while Microsoft answers (the setup wizard's steps read and verify mailboxes over Graph)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text

from m365sim.state import EmulatorState
from postroom.integrations import web as views  # graph_call lives in integrations.web
from tests.postroom.conftest import Postroom
from tests.postroom.test_sync import setup_personal


def test_no_transaction_is_open_while_the_wizard_calls_graph(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_during_calls: list[int] = []
    real = views.run_graph

    def watched(*args: Any, **kwargs: Any) -> Any:
        with postroom.database.engine.connect() as conn:
            open_during_calls.append(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            )
        return real(*args, **kwargs)

    monkeypatch.setattr(views, "run_graph", watched)
    setup_personal(web, postroom, postroom.org(sim))
    assert len(open_during_calls) >= 4  # step 1 and 2 pages, their posts (verify mailboxes)
    assert open_during_calls == [0] * len(open_during_calls)
