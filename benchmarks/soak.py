"""The chaos soak (issue 15): mail keeps arriving while everything that can fail, fails.

``emails`` emails go into ``mailboxes`` mailboxes through the real webhook path (m365sim's
change notifications → ``postroom web`` → the job queue → two ``postroom worker`` processes),
while:

* m365sim answers 10 % of all Graph requests (every endpoint, ``$batch`` items too) with 429,
  503 (both with ``Retry-After``) or 504, in equal parts (``POST /_emulator/faults``);
* change notifications are dropped (10 %), duplicated (10 %), delayed and reordered
  (``PUT /_emulator/notification-faults``);
* one of the two workers is SIGKILLed at a random moment every ~20 s (uniform 10–30 s) and a
  new one started in its place;
* PostgreSQL is restarted once (``pg_ctl restart -m fast``: same data directory, same socket;
  every connection of web and workers is cut) at 40 % of the stream;
* the access token expires at 65 % of the stream: the emulator clock jumps past the token's
  lifetime, so the token Postroom holds (MSAL still thinks it valid) is refused with 401.

Rules: every email gets one category with a folder (``Filed`` → ``Soak/Filed``); a tenth
(subject with "forward") get ``Forwarded`` → ``Soak/Forwarded`` and a forward to an address
outside the tenant. Faults start after the setup job (subscriptions exist) and stop once the
stream and the chaos are over; the product recovers on its own: stalled jobs of a killed worker
and its stale claims (``POSTROOM_STALE_CLAIM_SECONDS`` = 15) are handed back by the periodic
reconcile, which also re-syncs any folder not synced for a minute
(``POSTROOM_RECONCILE_MINUTES`` = 1, lowered from ProcessingEnv's 60 so that a dropped
notification of a mailbox's last email is repaired by the product itself; nobody calls
``reconcile_now`` here).

Afterwards, checked in the emulator's own state and request log and in the ledger:

* ``soak.lost`` — emails not (labelled with exactly their category once, in their folder by
  folder identity, ledger row ``done``, forwarded when they should be);
* ``soak.duplicate_actions`` — labels written twice + moves done twice + forwards sent twice
  (2xx ``PATCH`` / ``move`` per message in the request log, sends per original in the
  emulator's outbound log);
* ``soak.deletions`` — m365sim's deletion audit;
* ``soak.stuck`` — ledger rows not in a final state, or more than one row for one email;
* ``soak.max_lag_s`` — max over emails of ledger ``done_at`` − delivery time;
* ``soak.worker_kills``, ``soak.pg_restarts``, ``soak.token_401`` (Graph answers 401 for the
  expired token), ``soak.graph_faults`` (injected), ``soak.notifications_dropped`` /
  ``_duplicated``, ``soak.seconds``.

``python -m benchmarks.soak`` (``make soak``) runs 2,000 emails into 20 mailboxes and merges
the figures into ``benchmarks/results/latest.json``; ``tests/postroom/test_soak.py`` runs 300.
Not ``bench_*.py``: ``make bench`` does not run it. Nothing here logs mail content.
"""

from __future__ import annotations

import argparse
import random
import signal
import ssl
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import httpx
from sqlalchemy import text

from benchmarks.processing_env import CategorySpec, Pacer, ProcessingEnv, wait_until

FORWARD_TO = "archive@elsewhere.test"  # outside the tenant: the forward leaves the emulator
FILED = CategorySpec(
    "Filed",
    "Soak/Filed",
    {"mode": "any", "items": [{"field": "Subject", "operator": "CONTAINS", "value": "soak"}]},
)
FORWARDED = CategorySpec(
    "Forwarded",
    "Soak/Forwarded",
    {"mode": "any", "items": [{"field": "Subject", "operator": "CONTAINS", "value": "forward"}]},
    forward_to=(FORWARD_TO,),
    color="preset4",
)
FAULT_STATUSES = ((429, 1.0), (503, 1.0), (504, None))  # (status, Retry-After)
STALE_CLAIM_SECONDS = 15
FINAL_STATES = ("done", "skipped", "failed")


@dataclass
class Email:
    index: int
    user_index: int
    message_id: str
    category: CategorySpec
    delivered_at: datetime


@dataclass
class ChaosLog:
    worker_kills: int = 0
    pg_restarts: int = 0
    pg_restart_seconds: float = 0.0
    token_expiries: int = 0
    errors: list[str] = field(default_factory=list)


def say(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- emulator control
class Control:
    """m365sim's control API over HTTPS, as an operator's script would call it."""

    def __init__(self, env: ProcessingEnv) -> None:
        environment = env.environment()
        self._http = httpx.Client(
            base_url=environment["POSTROOM_AUTHORITY_HOST"],
            verify=ssl.create_default_context(cafile=environment["POSTROOM_CA_BUNDLE"]),
            timeout=30,
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self._http.request(method, path, json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def faults_on(self, rate: float, seed: int) -> None:
        # Three rules, the first that fires wins: each at p with 1 - (1 - p)^3 = rate.
        each = 1.0 - (1.0 - rate) ** (1.0 / len(FAULT_STATUSES))
        for n, (status, retry_after) in enumerate(FAULT_STATUSES):
            spec: dict[str, Any] = {"path": ".*", "method": "*", "status": status, "rate": each}
            if retry_after is not None:
                spec["retry_after"] = retry_after
            if n == 0:
                spec["seed"] = seed
            self._call("POST", "/_emulator/faults", spec)

    def faults_injected(self) -> int:
        rules = self._call("GET", "/_emulator/faults")["value"]
        return sum(int(rule["hits"]) for rule in rules)

    def faults_off(self) -> None:
        self._call("DELETE", "/_emulator/faults")
        self._call("DELETE", "/_emulator/notification-faults")

    def notification_faults_on(self, drop: float, duplicate: float, seed: int) -> None:
        spec = {
            "drop_rate": drop,
            "duplicate_rate": duplicate,
            "delay_ms": 200,
            "reorder": True,
            "seed": seed,
        }
        self._call("PUT", "/_emulator/notification-faults", spec)

    def advance_clock(self, seconds: float) -> None:
        self._call("POST", "/_emulator/clock/advance", {"seconds": seconds})


# ---------------------------------------------------------------------- chaos
def restart_postgres(env: ProcessingEnv) -> float:
    """``pg_ctl restart -m fast`` on the embedded cluster: same data directory, same socket
    (pg_ctl reuses the options the server was started with); every client connection is cut.
    Returns the seconds it took."""
    from pgserver import _commands  # type: ignore[import-untyped,unused-ignore]
    from pgserver.utils import PostmasterInfo  # type: ignore[import-untyped,unused-ignore]

    server = env.database.embedded
    started = time.monotonic()
    _commands.pg_ctl(
        ["-w", "-m", "fast", "-l", str(server.log), "restart"],
        pgdata=server.pgdata,
        user=server.system_user,
        timeout=120,
    )
    # pgserver stops "its" postmaster at cleanup: let it know the new one.
    server._postmaster_info = PostmasterInfo.read_from_pgdata(server.pgdata)
    return time.monotonic() - started


class Chaos(threading.Thread):
    """Kills a worker every ~``kill_every`` s and restarts it; restarts PostgreSQL and expires
    the access token once each, at fractions of ``duration``."""

    def __init__(
        self,
        env: ProcessingEnv,
        control: Control,
        rng: random.Random,
        *,
        duration: float,
        kill_every: float,
        concurrency: int,
    ) -> None:
        super().__init__(daemon=True, name="soak-chaos")
        self.env = env
        self.control = control
        self.rng = rng
        self.duration = duration
        self.kill_every = kill_every
        self.concurrency = concurrency
        self.log = ChaosLog()
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        start = time.monotonic()
        once = {
            "postgres": start + 0.40 * self.duration,
            "token": start + 0.65 * self.duration,
        }
        if self.env.database.embedded is None:  # an outside server (DATABASE_URL): not ours
            del once["postgres"]
        next_kill = start + self.kill_every * self.rng.uniform(0.5, 1.5)
        while not self._stop_event.is_set():
            now = time.monotonic()
            if now >= start + self.duration and not once:
                break
            due = [name for name, at in once.items() if at <= now]
            try:
                if due:
                    name = due[0]
                    del once[name]
                    self._once(name)
                elif now >= next_kill and now < start + self.duration:
                    next_kill = now + self.kill_every * self.rng.uniform(0.5, 1.5)
                    self._kill_one()
            except Exception as exc:  # keep going: the soak reports it
                self.log.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                say(f"chaos step failed: {type(exc).__name__}: {exc}"[:300])
            self._stop_event.wait(0.2)

    def _once(self, name: str) -> None:
        if name == "postgres":
            seconds = restart_postgres(self.env)
            self.log.pg_restarts += 1
            self.log.pg_restart_seconds = seconds
            say(f"PostgreSQL restarted ({seconds:.1f} s)")
        else:
            lifetime = self.env.sim.config.access_token_lifetime
            self.control.advance_clock(lifetime + 60)
            self.log.token_expiries += 1
            say(f"emulator clock advanced {lifetime + 60} s: the access token expired")

    def _kill_one(self) -> None:
        alive = [p for p in self.env.workers if p.poll() is None]
        if not alive:
            return
        victim = self.rng.choice(alive)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.log.worker_kills += 1
        say(f"worker SIGKILLed ({self.log.worker_kills}); starting another")
        self.env.start_workers(1, concurrency=self.concurrency)


# ---------------------------------------------------------------------- the run
def run(
    emails: int = 2000,
    mailboxes: int = 20,
    *,
    rate: float = 5.0,
    seed: int = 15,
    fault_rate: float = 0.10,
    drop_rate: float = 0.10,
    duplicate_rate: float = 0.10,
    kill_every: float = 20.0,
    concurrency: int = 4,
    settle_timeout: float = 420.0,
    details: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Run the soak; return the ``soak.*`` figures. ``details`` (when given) receives what
    went wrong per email, for a test's assertion messages (ids and counts only)."""
    rng = random.Random(seed)
    settings = {
        "POSTROOM_STALE_CLAIM_SECONDS": str(STALE_CLAIM_SECONDS),
        "POSTROOM_RECONCILE_MINUTES": "1",
    }
    started = time.monotonic()
    with ProcessingEnv(mailboxes=mailboxes, settings=settings) as env:
        # Every Graph request, not the last 20,000: duplicates are counted from this log.
        env.sim.request_log = deque()
        from m365sim.notifications.delivery import notifier_for

        notifier = notifier_for(env.sim)
        notifier._log = deque()  # every delivery attempt, for the dropped/duplicated counts

        env.connect([FORWARDED, FILED])
        env.start_workers(2, concurrency=concurrency)
        env.setup()
        say(f"setup done in {time.monotonic() - started:.0f} s; {emails} emails at {rate}/s")

        control = Control(env)
        control.faults_on(fault_rate, seed)
        control.notification_faults_on(drop_rate, duplicate_rate, seed)

        sent: list[Email] = []
        plan = [(n, rng.randrange(mailboxes)) for n in range(emails)]

        def deliver(n: int) -> None:
            index, user_index = plan[n]
            category = FORWARDED if index % 10 == 0 else FILED
            subject = f"Soak {index} forward" if category is FORWARDED else f"Soak {index}"
            delivered_at = datetime.now(UTC)
            msg = env.deliver(env.users[user_index], subject=subject)
            sent.append(Email(index, user_index, msg.immutable_id, category, delivered_at))

        duration = emails / rate
        chaos = Chaos(
            env,
            control,
            rng,
            duration=duration,
            kill_every=kill_every,
            concurrency=concurrency,
        )
        stream_started = time.monotonic()
        stream = Pacer(rate).run(emails, deliver)
        chaos.start()
        stream.join()
        chaos.join()
        say(f"stream and chaos over after {time.monotonic() - stream_started:.0f} s")
        faults = control.faults_injected()
        control.faults_off()

        ids = {e.message_id for e in sent}
        finished = wait_until(lambda: _all_final(env, ids), settle_timeout, 1.0)
        say(f"{'all' if finished else 'NOT all'} emails final after {_age(stream_started)} s")
        # Quiet: nothing waiting or running (stalled jobs of killed workers given back too).
        wait_until(lambda: env.waiting_jobs() == 0, 120, 1.0)
        env.stop_workers()
        elapsed = time.monotonic() - stream_started
        control.close()

        figures, problems = _verify(env, sent)
        figures.update(
            {
                "soak.worker_kills": float(chaos.log.worker_kills),
                "soak.pg_restarts": float(chaos.log.pg_restarts),
                "soak.token_expiries": float(chaos.log.token_expiries),
                "soak.graph_faults": float(faults),
                "soak.chaos_errors": float(len(chaos.log.errors)),
                "soak.seconds": round(elapsed, 1),
            }
        )
        results = Counter(str(entry.get("result")) for entry in notifier.log_entries())
        figures["soak.notifications_dropped"] = float(results["dropped_by_fault"])
        figures["soak.notifications_delivered"] = float(results["delivered"])
        if details is not None:
            details.update(problems)
            details["queue"] = _queue_report(env)
            details["embedded_postgres"] = env.database.embedded is not None
            with env.database.engine.connect() as conn:
                details["integration_status"] = conn.execute(
                    text("SELECT status FROM integrations WHERE id = :i"),
                    {"i": env.integration_id},
                ).scalar_one()
            details["chaos_errors"] = list(chaos.log.errors)
            details["ledger_states"] = dict(env.ledger_states())
            if figures["soak.lost"] or figures["soak.stuck"]:
                details["worker_log_tail"] = {
                    f"worker{n}": _errors_only(env.log(f"worker{n}"))
                    for n in range(len(env.workers) + chaos.log.worker_kills + 2)
                }
        return figures


def _queue_report(env: ProcessingEnv) -> dict[str, Any]:
    """Jobs by task and status, and the workers' heartbeats (for a failure's message)."""
    with env.database.engine.connect() as conn:
        jobs = conn.execute(
            text(
                "SELECT task_name, status, count(*) FROM procrastinate_jobs "
                "GROUP BY task_name, status ORDER BY 1, 2"
            )
        ).all()
        doing = conn.execute(
            text(
                "SELECT id, task_name, lock, worker_id, scheduled_at FROM procrastinate_jobs "
                "WHERE status IN ('doing', 'todo')"
            )
        ).all()
        workers = conn.execute(
            text("SELECT id, now() - last_heartbeat FROM procrastinate_workers")
        ).all()
        claimed = conn.execute(
            text(
                "SELECT mailbox_id, attempts, last_error, now() - claimed_at FROM ledger "
                "WHERE state = 'claimed'"
            )
        ).all()
        syncs = conn.execute(
            text("SELECT mailbox_id, now() - last_synced_at, last_error FROM folder_syncs")
        ).all()
    return {
        "jobs": [tuple(map(str, row)) for row in jobs],
        "open_jobs": [tuple(map(str, row)) for row in doing],
        "workers": [tuple(map(str, row)) for row in workers],
        "claimed": [tuple(map(str, row)) for row in claimed],
        "folder_syncs": [tuple(map(str, row)) for row in syncs],
    }


def _age(since: float) -> int:
    return int(time.monotonic() - since)


def _errors_only(log: str) -> list[str]:
    return [line[:300] for line in log.splitlines() if "Error" in line or "error" in line][-20:]


def _all_final(env: ProcessingEnv, ids: set[str]) -> bool:
    with env.database.engine.connect() as conn:
        rows = conn.execute(text("SELECT message_id, state FROM ledger")).all()
    final = {str(m) for m, s in rows if s in FINAL_STATES}
    open_rows = sum(1 for _m, s in rows if s not in FINAL_STATES)
    return ids <= final and open_rows == 0


def _folder_path(mailbox: Any, folder_id: str) -> str:
    """The folder's path of display names below msgfolderroot, by identity ("" when it does
    not reach the root)."""
    names: list[str] = []
    folder = mailbox.folders.get(folder_id)
    while folder is not None:
        if folder.well_known == "msgfolderroot":
            return "/".join(reversed(names))
        names.append(folder.display_name)
        folder = mailbox.folders.get(folder.parent_id) if folder.parent_id else None
    return ""


def _verify(env: ProcessingEnv, sent: list[Email]) -> tuple[dict[str, float], dict[str, Any]]:
    with env.database.engine.connect() as conn:
        rows = conn.execute(text("SELECT message_id, state, done_at FROM ledger")).all()
    ledger: dict[str, list[tuple[str, datetime | None]]] = {}
    for message_id, state, done_at in rows:
        ledger.setdefault(str(message_id), []).append((str(state), done_at))
    stuck = sum(1 for entries in ledger.values() for s, _d in entries if s not in FINAL_STATES)
    stuck += sum(len(entries) - 1 for entries in ledger.values() if len(entries) > 1)

    labels: Counter[str] = Counter()
    moves: Counter[str] = Counter()
    token_401 = 0
    statuses: Counter[int] = Counter()
    for record in list(env.sim.request_log):
        statuses[record.status] += 1
        if record.status == 401:
            token_401 += 1
        if not 200 <= record.status < 300:
            continue
        path = unquote(record.path.split("?", 1)[0])
        parts = path.rstrip("/").split("/")
        if record.method == "PATCH" and len(parts) >= 2 and parts[-2] == "messages":
            labels[parts[-1]] += 1
        elif record.method == "POST" and len(parts) >= 3 and parts[-1] == "move":
            moves[parts[-2]] += 1
    forwards = Counter(m.source_message_id for m in env.sim.store.outbound if m.kind == "forward")

    problems: dict[str, Any] = {
        "not_done": [],
        "wrong_category": [],
        "wrong_folder": [],
        "forward_missing": [],
        "labelled_twice": [],
        "moved_twice": [],
        "forwarded_twice": [],
    }
    lost: set[str] = set()
    max_lag = 0.0
    for email in sent:
        mid = email.message_id
        mailbox = env.users[email.user_index].mailbox
        msg = mailbox.messages.get(mid)
        entries = ledger.get(mid, [])
        done = [d for s, d in entries if s == "done"]
        if len(entries) != 1 or not done or done[0] is None:
            problems["not_done"].append((email.index, [s for s, _d in entries]))
            lost.add(mid)
        else:
            max_lag = max(max_lag, (done[0] - email.delivered_at).total_seconds())
        if msg is None or msg.categories != [email.category.name]:
            problems["wrong_category"].append(email.index)
            lost.add(mid)
        if msg is None or _folder_path(mailbox, msg.folder_id) != email.category.folder:
            problems["wrong_folder"].append(email.index)
            lost.add(mid)
        expected_forwards = 1 if email.category.forward_to else 0
        if forwards[mid] < expected_forwards:
            problems["forward_missing"].append(email.index)
            lost.add(mid)
        if labels[mid] > 1:
            problems["labelled_twice"].append((email.index, labels[mid]))
        if moves[mid] > 1:
            problems["moved_twice"].append((email.index, moves[mid]))
        if forwards[mid] > expected_forwards:
            problems["forwarded_twice"].append((email.index, forwards[mid]))
    duplicates = (
        sum(labels[e.message_id] - 1 for e in sent if labels[e.message_id] > 1)
        + sum(moves[e.message_id] - 1 for e in sent if moves[e.message_id] > 1)
        + sum(
            forwards[e.message_id] - (1 if e.category.forward_to else 0)
            for e in sent
            if forwards[e.message_id] > (1 if e.category.forward_to else 0)
        )
    )
    figures = {
        "soak.emails": float(len(sent)),
        "soak.lost": float(len(lost)),
        "soak.duplicate_actions": float(duplicates),
        "soak.deletions": float(len(env.sim.store.deletions)),
        "soak.stuck": float(stuck),
        "soak.max_lag_s": round(max_lag, 1),
        "soak.forwards_sent": float(sum(forwards[e.message_id] for e in sent)),
        "soak.forwards_expected": float(sum(1 for e in sent if e.category.forward_to)),
        "soak.token_401": float(token_401),
        "soak.graph_requests": float(sum(statuses.values())),
        "soak.label_writes": float(sum(labels[e.message_id] for e in sent)),
        "soak.moves": float(sum(moves[e.message_id] for e in sent)),
    }
    return figures, {k: v[:50] for k, v in problems.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=2000)
    parser.add_argument("--mailboxes", type=int, default=20)
    parser.add_argument("--rate", type=float, default=5.0, help="emails per second")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--settle", type=float, default=420.0, help="seconds to wait after")
    parser.add_argument("--no-merge", action="store_true", help="do not write latest.json")
    args = parser.parse_args(argv)
    details: dict[str, Any] = {}
    figures = run(args.emails, args.mailboxes, rate=args.rate, seed=args.seed, details=details)
    for name, value in sorted(figures.items()):
        print(f"{name} = {value:g}")
    failed = any(
        figures[k] for k in ("soak.lost", "soak.duplicate_actions", "soak.deletions", "soak.stuck")
    )
    if failed:
        import pprint

        pprint.pprint({k: v for k, v in details.items() if v}, stream=sys.stderr, width=100)
    if not args.no_merge:
        from benchmarks.results_file import merge_results

        merge_results(figures)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
