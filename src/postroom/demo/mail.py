"""Demo mail: realistic business emails (English and Dutch) delivered to the demo mailboxes
every little while through m365sim's control API — so the demo shows real-time processing.

Deterministic for a given seed; nothing here is used outside ``postroom demo``.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx

log = logging.getLogger("postroom.demo")


@dataclass(frozen=True)
class DemoMail:
    sender: str
    subject: str
    body: str


TEMPLATES = [
    DemoMail(
        "Nordic Freight <billing@nordicfreight.example>",
        "Invoice {n} for transport services",
        "Dear customer,\n\nPlease find attached invoice {n} for last week's transport. "
        "Payment term 30 days.\n\nKind regards,\nNordic Freight Accounts",
    ),
    DemoMail(
        "Bakkerij de Vries <inkoop@bakkerijdevries.example>",
        "Factuur {n} - levering meel",
        "Beste,\n\nIn de bijlage vindt u factuur {n} voor de levering van meel. Graag binnen "
        "14 dagen betalen.\n\nMet vriendelijke groet,\nBakkerij de Vries",
    ),
    DemoMail(
        "Jan Peeters <jan.peeters@example.nl>",
        "Waar is mijn pakket? Bestelling {n}",
        "Hallo,\n\nIk heb bestelling {n} vorige week geplaatst maar nog niets ontvangen. De "
        "track-and-trace code werkt niet. Kunt u kijken waar het pakket is?\n\nJan",
    ),
    DemoMail(
        "Sarah Miller <sarah.miller@example.com>",
        "Where is my parcel? Order {n}",
        "Hi,\n\nMy order {n} was supposed to arrive on Monday. The tracking page shows no "
        "update since Friday. Can you check?\n\nThanks,\nSarah",
    ),
    DemoMail(
        "Office Supplies Direct <orders@osd.example>",
        "Order {n} confirmation",
        "Thank you for your order {n}: 20 boxes of A4 paper, 5 toner cartridges. Expected "
        "delivery: Thursday.",
    ),
    DemoMail(
        "Klantenservice <klacht@example.be>",
        "Klacht over beschadigde levering {n}",
        "Goedemiddag,\n\nDe levering met nummer {n} kwam beschadigd aan. Twee dozen waren "
        "nat en de inhoud is onbruikbaar. Ik wil graag een vervanging of creditnota.",
    ),
    DemoMail(
        "Logistics Weekly <news@logisticsweekly.example>",
        "This week in logistics #{n}",
        "Top stories: port congestion eases, diesel prices fall, and five tips for "
        "warehouse safety. Unsubscribe at any time.",
    ),
]


class DemoMailGenerator:
    """Delivers one demo email every ``interval`` seconds to one of ``mailboxes``."""

    def __init__(
        self,
        *,
        base_url: str,
        ca_file: Path,
        mailboxes: list[str],
        interval: float = 45.0,
        seed: int = 7,
    ) -> None:
        self.base_url = base_url
        self.mailboxes = mailboxes
        self.interval = interval
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._verify = ssl.create_default_context(cafile=str(ca_file))
        self._thread = threading.Thread(target=self._run, name="demo-mail", daemon=True)
        self.sent = 0

    def start(self) -> DemoMailGenerator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def next_mail(self) -> tuple[str, dict[str, object]]:
        template = self._random.choice(TEMPLATES)
        number = str(self._random.randint(10000, 99999))
        mailbox = self._random.choice(self.mailboxes)
        return mailbox, {
            "from": template.sender,
            "subject": template.subject.format(n=number),
            "body": template.body.format(n=number),
        }

    def deliver_one(self, client: httpx.Client) -> None:
        mailbox, payload = self.next_mail()
        response = client.post(
            f"{self.base_url}/_emulator/mailboxes/{mailbox}/deliver", json=payload
        )
        if response.status_code >= 400:
            log.warning("demo mail to %s refused: %s", mailbox, response.status_code)
        else:
            self.sent += 1

    def _run(self) -> None:
        with httpx.Client(verify=self._verify, timeout=10, trust_env=False) as client:
            while not self._stop.wait(self.interval):
                try:
                    self.deliver_one(client)
                except httpx.HTTPError as exc:
                    log.warning("demo mail not delivered: %s", type(exc).__name__)
