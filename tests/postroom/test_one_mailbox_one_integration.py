"""Issue 19, item 16: the same mailbox chosen in two integrations (even in two workspaces) got
both categories and landed in whichever folder was written last. Now the second is refused."""

from __future__ import annotations

import ssl

import httpx
from sqlalchemy import func, select

from m365sim.state import EmulatorState
from postroom.integrations.models import Mailbox
from tests.postroom.conftest import Postroom
from tests.postroom.test_connect import connect_organization
from tests.postroom.test_sync import setup_personal
from tests.postroom.webtools import csrf, post_form, sign_up


def test_a_mailbox_another_integration_processes_is_refused(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, ssl_context: ssl.SSLContext
) -> None:
    org = postroom.org(sim)
    setup_personal(web, postroom, org)  # Alice's own mailbox, in workspace Acme
    with httpx.Client(
        base_url=postroom.url, timeout=30, trust_env=False, verify=ssl_context
    ) as other:
        sign_up(other, email="it@other.test", name="Ivo IT", workspace="Other")
        base = connect_organization(other, postroom, org).removesuffix("/setup")
        assert post_form(other, f"{base}/setup/1", f"{base}/setup/1").status_code == 303
        page = other.get(f"{base}/setup/2")
        refused = other.post(
            f"{base}/setup/2",
            data={
                "csrf_token": csrf(page.text),
                "mailboxes": [org.alice.id, org.bob.id],
                "folders": "inbox",
            },
        )
        assert refused.status_code == 400
        assert org.alice.user_principal_name in refused.text
        assert "another Postroom workspace" in refused.text
        ok = other.post(
            f"{base}/setup/2",
            data={"csrf_token": csrf(page.text), "mailboxes": [org.bob.id], "folders": "inbox"},
        )
        assert ok.status_code == 303
    with postroom.database.session() as db:
        owners = db.scalar(
            select(func.count())
            .select_from(Mailbox)
            .where(func.lower(Mailbox.address) == org.alice.user_principal_name.lower())
        )
    assert owners == 1
