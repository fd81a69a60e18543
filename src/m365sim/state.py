"""One running emulator: the store plus everything around it that is not Microsoft's data.

:class:`EmulatorState` is what every handler receives. It holds the :class:`Store`, the
configuration, the signing key, throttling and fault-injection state, the request log and
counters, the control token (:mod:`m365sim.control.guard`), and the public base URL that
links (``@odata.nextLink``, discovery documents) use.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m365sim.clock import Clock
from m365sim.config import EmulatorConfig
from m365sim.graph.faults import Faults
from m365sim.graph.throttle import Throttle
from m365sim.store import Store
from m365sim.tokens import AccessClaims, SigningKey


@dataclass
class RequestRecord:
    time: float
    method: str
    path: str
    status: int
    endpoint: str  # route template, e.g. "GET /users/{id}/messages/{id}"
    mailbox_id: str | None
    client_id: str | None
    request_id: str
    in_batch: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class EmulatorState:
    store: Store
    config: EmulatorConfig
    signing_key: SigningKey
    base_url: str = "https://localhost"
    data_dir: Path | None = None
    throttle: Throttle = field(init=False)
    faults: Faults = field(default_factory=Faults)
    request_log: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=20_000))
    counters: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    _token_cache: dict[str, AccessClaims] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)
    log_lock: threading.Lock = field(default_factory=threading.Lock)
    # Bearer token for the control API and the viewer ("" = none; m365sim.control.guard).
    # Not in EmulatorConfig: the config is readable and changeable through the control API.
    control_token: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        self.throttle = Throttle(self.config, self.store.clock)

    @property
    def clock(self) -> Clock:
        return self.store.clock

    @property
    def graph_base(self) -> str:
        return f"{self.base_url}/v1.0"

    def record(self, rec: RequestRecord) -> None:
        with self.log_lock:
            self.request_log.append(rec)
            self.counters[(rec.mailbox_id or "-", rec.method, rec.endpoint)] += 1

    def cache_claims(self, token: str, claims: AccessClaims) -> None:
        if len(self._token_cache) > 50_000:
            self._token_cache.clear()
        self._token_cache[token] = claims

    def cached_claims(self, token: str) -> AccessClaims | None:
        return self._token_cache.get(token)


def new_state(
    *,
    data_dir: Path | None = None,
    config: EmulatorConfig | None = None,
    base_url: str = "https://localhost",
    control_token: str = "",
) -> EmulatorState:
    key = (
        SigningKey.load_or_create(data_dir / "signing-key.json")
        if data_dir
        else SigningKey.generate()
    )
    return EmulatorState(
        store=Store(Clock()),
        config=config or EmulatorConfig(),
        signing_key=key,
        base_url=base_url,
        data_dir=data_dir,
        control_token=control_token,
    )
