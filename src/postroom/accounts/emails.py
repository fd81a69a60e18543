"""The texts of Postroom's account emails: (subject, plain-text body) pairs, no I/O.

:mod:`postroom.mail` sends them. The sign-up link's line starts with "Open this link to finish
signing up:" so that, in the demo, where emails are printed to the terminal, it stands out.
"""

from __future__ import annotations

from datetime import datetime

ROLE_WORDS = {
    "owner": "an owner (manages integrations and members)",
    "admin": "an admin (manages integrations)",
    "member": "a member (views integrations)",
}


def signup_link(*, link: str, hours: int) -> tuple[str, str]:
    return (
        "Finish creating your Postroom account",
        "Hello,\n\n"
        "Someone (we hope you) asked to create a Postroom account with this email address.\n\n"
        f"Open this link to finish signing up: {link}\n\n"
        f"The link works once, within {hours} hours. If it was not you, ignore this email: "
        "no account is created without the link.\n",
    )


def signup_existing(*, signin: str) -> tuple[str, str]:
    return (
        "Someone tried to create a Postroom account with your address",
        "Hello,\n\n"
        "Someone (perhaps you) tried to create a new Postroom account with this email "
        "address, but you already have one. Nothing was changed.\n\n"
        f"To use your account, sign in: {signin}\n\n"
        "If you cannot remember your password, ask an owner of your workspace or the "
        "person who runs this Postroom to reset it. If it was not you, you can ignore this "
        "email.\n",
    )


def invitation(
    *, inviter: str, workspace: str, role: str, address: str, link: str, expires_at: datetime
) -> tuple[str, str]:
    return (
        f"{inviter} invited you to {workspace} on Postroom",
        "Hello,\n\n"
        f"{inviter} invited you to join the workspace “{workspace}” on Postroom as "
        f"{ROLE_WORDS.get(role, role)}.\n\n"
        f"Open this link to accept the invitation: {link}\n\n"
        f"You accept it signed in as {address}, or by creating a Postroom account for this "
        f"address. The link works once, until {expires_at:%Y-%m-%d %H:%M} UTC. If you do not "
        "want to join, ignore this email: nothing happens without you.\n",
    )
