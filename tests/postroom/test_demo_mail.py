"""The demo's mail generator delivers realistic mail through m365sim's control API."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

from m365sim.server import EmulatorServer
from postroom.demo.mail import DemoMailGenerator
from tests.helpers import Org


def test_generator_delivers_to_the_demo_mailboxes(
    sim_server: EmulatorServer, org: Org, ssl_context: ssl.SSLContext
) -> None:
    generator = DemoMailGenerator(
        base_url=sim_server.base_url,
        ca_file=sim_server.ca_file,
        mailboxes=[org.alice.user_principal_name, org.bob.user_principal_name],
        seed=1,
    )
    with httpx.Client(verify=ssl_context, trust_env=False) as client:
        for _ in range(6):
            generator.deliver_one(client)
    assert generator.sent == 6
    delivered = [m for user in (org.alice, org.bob) for m in user.mailbox.messages.values()]
    assert len(delivered) == 6
    assert all(m.sender is not None and "@" in m.sender.address for m in delivered)
    assert len({m.subject for m in delivered}) == 6


def test_same_seed_same_mail() -> None:
    def sample() -> list[tuple[str, dict[str, object]]]:
        gen = DemoMailGenerator(base_url="https://x", ca_file=_ca(), mailboxes=["a@x"], seed=3)
        return [gen.next_mail() for _ in range(5)]

    assert sample() == sample()


def _ca() -> Path:  # any readable CA bundle works for building the context
    import certifi

    return Path(certifi.where())
