"""Password hashing with Argon2id (argon2-cffi's defaults, RFC 9106 low-memory profile), and the
password policy, after NIST SP 800-63B section 5.1.1.2 ("memorized secrets").

The policy is one function, :func:`check_password_policy`, used wherever a person chooses a
password (sign-up, invitation sign-up, password change). It asks for a length and refuses what
an attacker tries first; it has no composition rules (no "a digit and a symbol"), as NIST
advises, because they make passwords harder to remember and no harder to guess:

* at least :data:`MIN_PASSWORD` and at most :data:`MAX_PASSWORD` characters (spaces count;
  any printable Unicode, no control characters);
* not on the list of common passwords shipped beside this module;
* not a single character or short unit repeated (``aaaaaaaaaa``, ``abcabcabca``) and not a run
  of consecutive characters (``1234567890``, ``abcdefghij``, ``9876543210``);
* not containing the email address's local part or the service's name.

``common-passwords.txt.gz`` is Django's list (django/contrib/auth/common-passwords.txt.gz,
Django 5.2, 20,000 passwords compiled by Royce Williams; BSD-3-Clause, its notice in
``common-passwords.LICENSE``). It holds lowercase entries, so the check is case-insensitive.
"""

from __future__ import annotations

import functools
import gzip
import unicodedata
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD = 10
MAX_PASSWORD = 1000
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common-passwords.txt.gz")
# words that name this service: a password built on them is among the first an attacker tries
SERVICE_WORDS = ("postroom",)

_hasher = PasswordHasher()


class WeakPassword(ValueError):
    """The chosen password does not meet the policy; the message says why, in plain words."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def common_passwords() -> frozenset[str]:
    with gzip.open(COMMON_PASSWORDS_FILE, "rt", encoding="utf-8") as lines:
        return frozenset(line.strip() for line in lines if line.strip())


def check_password_policy(password: str, *, email: str = "") -> None:
    """Raise :class:`WeakPassword` (a ``ValueError``) when ``password`` may not be chosen by
    the person with ``email``; return ``None`` when it may."""
    if len(password) < MIN_PASSWORD:
        raise WeakPassword(f"Choose a password of at least {MIN_PASSWORD} characters.")
    if len(password) > MAX_PASSWORD:
        raise WeakPassword(f"Choose a password of at most {MAX_PASSWORD} characters.")
    if any(unicodedata.category(c) == "Cc" for c in password):
        raise WeakPassword("Use letters, digits, spaces and symbols only (no control characters).")
    folded = password.casefold()
    if folded in common_passwords() or folded.strip() in common_passwords():
        raise WeakPassword(
            "This password is on a list of commonly used passwords that attackers try first. "
            "Choose another: a few unrelated words make a good one."
        )
    if _is_repetitive(folded) or _is_sequence(folded):
        raise WeakPassword(
            "This password is too easy to guess: it repeats or counts characters "
            "(like aaaaaaaaaa or 1234567890). Choose another."
        )
    local_part = email.strip().casefold().partition("@")[0]
    if len(local_part) >= 3 and local_part in folded:
        raise WeakPassword("Choose a password that does not contain your email address.")
    if any(word in folded for word in SERVICE_WORDS):
        raise WeakPassword("Choose a password that does not contain the word Postroom.")


def _is_repetitive(text: str) -> bool:
    """Fewer than 3 different characters, or a unit of at most 4 characters repeated."""
    if len(set(text)) < 3:
        return True
    for size in range(1, 5):
        unit = text[:size]
        if len(text) >= 2 * size and (unit * (len(text) // size + 1)).startswith(text):
            return True
    return False


def _is_sequence(text: str) -> bool:
    """Every character is the one after (or before) the previous one: ``abcdef``, ``987654``;
    digits wrap (``1234567890``)."""
    if len(text) < 3:
        return False

    def step(a: str, b: str) -> int:
        if a.isdigit() and b.isdigit():
            return (int(b) - int(a) + 5) % 10 - 5  # 9 -> 0 is +1, 0 -> 9 is -1
        return ord(b) - ord(a)

    steps = {step(a, b) for a, b in zip(text, text[1:], strict=False)}
    return steps == {1} or steps == {-1}
