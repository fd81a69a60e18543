"""Synthetic English and Dutch emails for the classifier tests (seeded, no data files)."""

from __future__ import annotations

import random

from postroom.processing.view import Address, MessageView

TEMPLATES: dict[str, dict[str, list[tuple[str, str]]]] = {
    "Invoices": {
        "en": [
            (
                "Invoice {n} for order {m}",
                "Please find attached invoice {n}. The amount of EUR {a} is due within {d} days.",
            ),
            (
                "Your invoice {n}",
                "Attached is the invoice for your recent order {m}."
                " Kindly pay EUR {a} before the due date.",
            ),
            (
                "Payment reminder invoice {n}",
                "Our records show invoice {n} of EUR {a} is still unpaid."
                " Please transfer the amount.",
            ),
        ],
        "nl": [
            (
                "Factuur {n} voor bestelling {m}",
                "In de bijlage vindt u factuur {n}."
                " Het bedrag van EUR {a} dient binnen {d} dagen betaald te worden.",
            ),
            (
                "Uw factuur {n}",
                "Bijgevoegd de factuur voor uw bestelling {m}."
                " Gelieve EUR {a} voor de vervaldatum over te maken.",
            ),
            (
                "Betalingsherinnering factuur {n}",
                "Volgens onze administratie staat factuur {n} van EUR {a} nog open."
                " Wilt u het bedrag overmaken?",
            ),
        ],
    },
    "Delivery": {
        "en": [
            (
                "Where is my parcel?",
                "I ordered {d} days ago (order {m}) and my package has still not arrived."
                " Can you give me the tracking code?",
            ),
            (
                "Order {m} not delivered",
                "The track and trace for order {m} has not changed for {d} days."
                " When will my parcel be delivered?",
            ),
            (
                "Delivery status order {m}",
                "Could you tell me when order {m} will be shipped? The courier has not come yet.",
            ),
        ],
        "nl": [
            (
                "Waar blijft mijn pakket?",
                "Ik heb {d} dagen geleden besteld (bestelling {m})"
                " en mijn pakket is nog steeds niet bezorgd."
                " Kunt u de trackingcode sturen?",
            ),
            (
                "Bestelling {m} niet geleverd",
                "De track en trace van bestelling {m} is al {d} dagen niet veranderd."
                " Wanneer wordt mijn pakket bezorgd?",
            ),
            (
                "Leverstatus bestelling {m}",
                "Kunt u mij laten weten wanneer bestelling {m} verzonden wordt?"
                " De bezorger is nog niet geweest.",
            ),
        ],
    },
    "Complaints": {
        "en": [
            (
                "Complaint about order {m}",
                "I am very unhappy: the product from order {m} arrived broken."
                " I want a refund or a replacement.",
            ),
            (
                "Terrible service",
                "This is the {d}th time I contact you and nobody helps me."
                " I am disappointed and want to file a complaint.",
            ),
            (
                "Damaged product",
                "The item I received is damaged and does not work."
                " This is unacceptable, please solve this.",
            ),
        ],
        "nl": [
            (
                "Klacht over bestelling {m}",
                "Ik ben zeer ontevreden: het product van bestelling {m} kwam kapot aan."
                " Ik wil mijn geld terug of een vervanging.",
            ),
            (
                "Slechte service",
                "Dit is de {d}e keer dat ik contact opneem en niemand helpt mij."
                " Ik ben teleurgesteld en dien een klacht in.",
            ),
            (
                "Beschadigd product",
                "Het artikel dat ik ontving is beschadigd en werkt niet."
                " Dit is onacceptabel, los dit alstublieft op.",
            ),
        ],
    },
    "Newsletters": {
        "en": [
            (
                "Our {d} best deals this week",
                "Discover this week's offers: up to {d}% off on selected items."
                " Unsubscribe at any time.",
            ),
            (
                "News from the team",
                "In this edition: new products, events and {d} tips for the season."
                " Click here to read more.",
            ),
            (
                "Weekly digest",
                "Here is your weekly update with the latest articles and {d} recommended reads."
                " Manage your subscription.",
            ),
        ],
        "nl": [
            (
                "Onze {d} beste aanbiedingen deze week",
                "Ontdek de aanbiedingen van deze week: tot {d}% korting op geselecteerde artikelen."
                " Afmelden kan altijd.",
            ),
            (
                "Nieuws van het team",
                "In deze editie: nieuwe producten, evenementen en {d} tips voor het seizoen."
                " Klik hier om verder te lezen.",
            ),
            (
                "Wekelijks overzicht",
                "Hier is uw wekelijkse update met de laatste artikelen en {d} aanbevolen stukken."
                " Beheer uw abonnement.",
            ),
        ],
    },
}

SENDERS = {
    "en": [("John Smith", "john.smith@example.com"), ("Mary Jones", "mary@shop.example.org")],
    "nl": [("Jan de Vries", "jan.devries@voorbeeld.nl"), ("Sanne Bakker", "sanne@winkel.nl")],
}


def email(category: str, language: str, variant: int, rng: random.Random) -> MessageView:
    subject, body = TEMPLATES[category][language][variant % 3]
    values = {
        "n": rng.randint(1000, 9999),
        "m": rng.randint(100000, 999999),
        "a": f"{rng.randint(10, 999)}.{rng.randint(0, 99):02d}",
        "d": rng.randint(2, 20),
    }
    name, address = rng.choice(SENDERS[language])
    return MessageView(
        subject=subject.format(**values),
        sender=Address(name, address),
        body_text=body.format(**values),
    )


def dataset(
    per_category: int, seed: int, languages: tuple[str, ...] = ("en", "nl")
) -> list[tuple[MessageView, str]]:
    """``per_category`` emails per category, languages and variants taking turns."""
    rng = random.Random(seed)
    out = []
    for category in sorted(TEMPLATES):
        for i in range(per_category):
            language = languages[i % len(languages)]
            out.append((email(category, language, i // len(languages) + seed, rng), category))
    return out


def view(
    subject: str = "", name: str = "", address: str = "", body: str = "", conversation: str = ""
) -> MessageView:
    """A message as the classifier reads it (subject, sender, body, conversation id)."""
    sender = Address(name, address) if name or address else None
    return MessageView(subject=subject, sender=sender, body_text=body, conversation_id=conversation)
