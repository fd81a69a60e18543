"""Sign-in throttling: failed password checks counted per account and per client address.

Counters live in PostgreSQL (one row per attempt in :class:`SignInAttempt`), so every web
process of a deployment sees the same counts. Keys are SHA-256 hashes of ``account:<email>``
and ``address:<ip>``: the table never holds the addresses people typed, and an email that has
no account is counted exactly like one that has, so the answer never tells which exist.

An attempt is recorded *before* the password is checked, in its own committed transaction, and
then the earlier attempts are counted: of N simultaneous guesses the k-th to commit sees at
least k-1 others, so a burst cannot slip past the limit. A refused attempt's row is deleted (a
lockout is not extended by knocking on it), a failed one stays, and a successful one clears the
account's rows (never the address's: an attacker must not reset their address's count by
signing in to an account of their own).

:func:`wait_seconds` is pure. An account is locked while it has ``limit`` failures within
``window``; further tiers grow the lock (twice the failures in four times the window, three
times in sixteen times, ... up to ``max_window``): with the defaults (5 per 15 minutes, 24
hours) an account can be tried 5 times in 15 minutes, 10 in an hour, 15 in 4 hours and 25 a
day. A client address has one tier (50 per 15 minutes).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, DateTime, Index, String, and_, delete, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from postroom.accounts.models import utcnow
from postroom.db import Base


class SignInAttempt(Base):
    __tablename__ = "sign_in_attempts"
    __table_args__ = (Index("ix_sign_in_attempts_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


@dataclass(frozen=True)
class Limits:
    account_failures: int
    address_failures: int
    window: timedelta
    max_window: timedelta


@dataclass(frozen=True)
class Attempt:
    """An attempt in progress: its rows' ids and the keys it was counted under."""

    account_key: str
    address_key: str
    row_ids: tuple[int, ...]


def account_key(email: str) -> str:
    return hashlib.sha256(f"account:{email.strip().lower()}".encode()).hexdigest()


def address_key(address: str) -> str:
    return hashlib.sha256(f"address:{address}".encode()).hexdigest()


def tiers(limit: int, window: timedelta, max_window: timedelta) -> list[tuple[int, timedelta]]:
    """(failures, within) pairs: ``limit`` in ``window``, twice that in 4x the window, ...,
    the last tier ending at ``max_window``."""
    result = [(limit, window)]
    k = 1
    while result[-1][1] < max_window:
        result.append((limit * (k + 1), min(window * 4**k, max_window)))
        k += 1
    return result


def wait_seconds(
    failures: Sequence[datetime], *, now: datetime, levels: Sequence[tuple[int, timedelta]]
) -> float:
    """How long until another attempt may be checked, given earlier failures (any order): 0
    when none of ``levels`` (failures, within) is reached."""
    recent = sorted(failures, reverse=True)
    wait = 0.0
    for limit, within in levels:
        if len(recent) >= limit:
            # locked while ``limit`` failures are within the window: until the limit-th most
            # recent one leaves it
            until = recent[limit - 1] + within
            wait = max(wait, (until - now).total_seconds())
    return wait


def begin(*, db: Session, account: str, address: str) -> Attempt:
    """Record an attempt under both keys (commit it before :func:`check`)."""
    now = utcnow()
    keys = (account_key(account), address_key(address))
    rows = [SignInAttempt(key=k, at=now) for k in keys]
    db.add_all(rows)
    db.flush()
    return Attempt(account_key=keys[0], address_key=keys[1], row_ids=tuple(r.id for r in rows))


def check(*, db: Session, attempt: Attempt, limits: Limits) -> float:
    """Seconds this attempt must wait (0: go ahead and check the password), counting every
    other recorded attempt of its account and its address, finished or still in progress."""
    now = utcnow()
    rows = db.execute(
        select(SignInAttempt.key, SignInAttempt.at).where(
            or_(
                and_(
                    SignInAttempt.key == attempt.account_key,
                    SignInAttempt.at > now - max(limits.max_window, limits.window),
                ),
                and_(
                    SignInAttempt.key == attempt.address_key,
                    SignInAttempt.at > now - limits.window,
                ),
            ),
            SignInAttempt.id.not_in(attempt.row_ids),
        )
    ).all()
    account = [at for key, at in rows if key == attempt.account_key]
    address = [at for key, at in rows if key == attempt.address_key]
    return max(
        wait_seconds(
            account,
            now=now,
            levels=tiers(limits.account_failures, limits.window, limits.max_window),
        ),
        wait_seconds(address, now=now, levels=[(limits.address_failures, limits.window)]),
    )


def refused(*, db: Session, attempt: Attempt) -> None:
    """The attempt was not checked: it does not count."""
    db.execute(delete(SignInAttempt).where(SignInAttempt.id.in_(attempt.row_ids)))


def failed(*, db: Session, attempt: Attempt, limits: Limits) -> None:
    """The password was wrong: the attempt's rows stay. Rows older than every window go."""
    cutoff = utcnow() - max(limits.max_window, limits.window)
    db.execute(delete(SignInAttempt).where(SignInAttempt.at < cutoff))


def succeeded(*, db: Session, attempt: Attempt) -> None:
    """The password was right: the account starts afresh; the address keeps its count."""
    db.execute(
        delete(SignInAttempt).where(
            (SignInAttempt.key == attempt.account_key) | SignInAttempt.id.in_(attempt.row_ids)
        )
    )


def describe_wait(seconds: float) -> str:
    """ "5 minutes", "1 minute", "3 hours": rounded up, for the refusal page."""
    minutes = max(1, math.ceil(seconds / 60))
    if minutes <= 90:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours = math.ceil(minutes / 60)
    return f"{hours} hours"
