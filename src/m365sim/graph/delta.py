"""Delta query for one folder's messages (graph.md 3.8), replayed from the folder's change log.

``GET /mailFolders/{id}/messages/delta`` (also ``delta()``, the SDK's form). The first request
may carry ``$select``, ``$top`` (page size), ``$filter=receivedDateTime ge|gt <date-time>`` (the
only filter Graph allows; the whole sync then returns at most ``config.delta_filter_cap``
messages) and ``$orderby=receivedDateTime desc`` (the only order allowed); any other form
answers 400 ``ErrorInvalidUrlQuery``. ``Prefer: odata.maxpagesize=N`` sets the page size
(echoed in ``Preference-Applied``). Pages carry ``@odata.nextLink`` (``delta?$skiptoken=``)
until the last one, which carries ``@odata.deltaLink`` (``delta?$deltatoken=``); both are
replayed verbatim and the options of the first request are baked into them.

How a page is made, O(page) and never O(folder)
  Every change to a folder's contents appends to its :class:`~m365sim.store.FolderLog`
  (``upsert`` or ``removed``, numbered by the mailbox's sequence) and ``latest`` maps each
  message to its newest entry. A token holds a position in that log:

  * initial sync: a snapshot position S (the mailbox sequence when the sync began) and a
    cursor walking the log *backwards* from S. An entry is returned when it is an ``upsert``
    that is still the message's newest entry; anything changed after S is skipped here and
    reported by the first incremental round. Pages therefore come newest arrival first, which
    is ``receivedDateTime desc`` for mail delivered in time order (mail injected with old
    ``receivedDateTime`` values keeps its arrival position — a documented deviation).
  * incremental rounds: the position P of the last round and an end E fixed on the round's
    first page; entries with P < seq <= E are walked forwards. A superseded entry is skipped
    (its newer entry reports it), a newest ``removed`` entry becomes
    ``{"@odata.type": "#microsoft.graph.message", "id": ..., "@removed": {"reason":
    "deleted"}}`` (moves out of the folder look the same, as on Exchange), a newest ``upsert``
    the full message (new arrivals, moves in, and updates such as ``categories`` or
    ``isRead``). Removals carry the REST id the message had in this folder (or the immutable
    id with ``Prefer: IdType="ImmutableId"``).

  Finding a position is a binary search over the log (sorted by sequence), so a page costs
  O(log n + page size + skipped superseded entries), independent of the folder's size.

Tokens
  Opaque base64url JSON: mailbox, folder, phase, positions, options, issue time and the
  mailbox's ``sync_state_epoch``. Tokens older than ``config.delta_token_lifetime_days``,
  tokens issued before the mailbox's sync state was reset (``POST
  /_emulator/mailboxes/{id}/sync-state/reset``), tokens for another folder or mailbox and
  garbled tokens all answer 410 Gone ``SyncStateNotFound`` "The sync state generation is not
  found; ..." — Graph's answer for lost sync state; garbled tokens are folded into it (rather
  than a 400) because the client's recovery, a full resync, is the same.
"""

from __future__ import annotations

import bisect
import re
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from m365sim.errors import GraphError
from m365sim.graph.dispatch import Ctx, GraphResponse, normalize_path, route, split_mailbox
from m365sim.graph.folders import find_folder
from m365sim.graph.odata import (
    decode_token,
    encode_token,
    parse_datetime_literal,
    parse_top,
    select_fields,
)
from m365sim.graph.serialize import (
    MESSAGE_DEFAULT,
    MESSAGE_SELECTABLE,
    MESSAGE_TYPE,
    Rendering,
    message_json,
)
from m365sim.state import EmulatorState
from m365sim.store import Folder, FolderLog, LogEntry, Mailbox, Message

_FILTER = re.compile(r"^\s*receivedDateTime\s+(ge|gt)\s+(\S+)\s*$", re.IGNORECASE)
_ORDER = re.compile(r"^\s*receivedDateTime\s+desc\s*$", re.IGNORECASE)
_ALLOWED_INITIAL = {"$select", "$filter", "$orderby", "$top"}


def _unsupported(option: str, supported: str) -> GraphError:
    return GraphError(
        400,
        "ErrorInvalidUrlQuery",
        f"The '{option}' parameter value is not supported for 'Messages' resource; only a "
        f"value of '{supported}' is supported.",
    )


def _gone(generation: Any, mailbox: Mailbox) -> GraphError:
    return GraphError(
        410,
        "SyncStateNotFound",
        f"The sync state generation is not found; generation={generation};"
        f"[highest={mailbox.sync_state_epoch}][{mailbox.sync_state_epoch}].",
    )


def _seq(entry: LogEntry) -> int:
    return entry.seq


class _Sync:
    """One delta request: the token's state plus how to render this page."""

    def __init__(self, ctx: Ctx, folder: Folder, state: dict[str, Any]) -> None:
        self.ctx = ctx
        self.folder = folder
        self.mailbox = ctx.mailbox_user.mailbox
        self.log: FolderLog = self.mailbox.logs[folder.id]
        self.state = state
        self.rendering = Rendering(ctx.req)
        fields = state.get("sel")
        self.fields: list[str] | None = list(fields) if isinstance(fields, list) else None
        self.after = None
        if state.get("fv") is not None:
            self.after = parse_datetime_literal(state["fv"])

    def matches(self, msg: Message) -> bool:
        if self.after is None:
            return True
        received = msg.received.replace(microsecond=0)
        return received > self.after if self.state.get("fo") == "gt" else received >= self.after

    def render(self, msg: Message) -> dict[str, Any]:
        item: dict[str, Any] = {"@odata.type": f"#{MESSAGE_TYPE}"}
        item.update(message_json(msg, self.rendering, self.fields))
        return item

    def removed(self, entry: LogEntry) -> dict[str, Any]:
        mid = entry.message_id if self.rendering.immutable else entry.rest_id or entry.message_id
        return {"@odata.type": f"#{MESSAGE_TYPE}", "id": mid, "@removed": {"reason": "deleted"}}

    def current(self, entry: LogEntry) -> Message | None:
        """The message of an entry that is still its newest, and still in this folder."""
        msg = self.mailbox.messages.get(entry.message_id)
        if msg is None or msg.folder_id != self.folder.id:
            return None
        return msg

    # -- pages: (values, next state or None when this page ends the round, deltaLink state)
    def initial_page(self, size: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        entries = self.log.entries
        cap = self.ctx.state.config.delta_filter_cap if self.after is not None else None
        emitted = int(self.state["n"])
        index = bisect.bisect_left(entries, int(self.state["c"]), key=_seq) - 1
        values: list[dict[str, Any]] = []
        while index >= 0 and len(values) < size and (cap is None or emitted < cap):
            entry = entries[index]
            index -= 1
            if entry.kind != "upsert" or self.log.latest.get(entry.message_id) != entry.seq:
                continue
            msg = self.current(entry)
            if msg is None or not self.matches(msg):
                continue
            values.append(self.render(msg))
            emitted += 1
        if index < 0 or (cap is not None and emitted >= cap):
            return values, {"ph": "d", "c": self.state["s"], "done": True}
        return values, {"ph": "i", "c": entries[index + 1].seq, "s": self.state["s"], "n": emitted}

    def incremental_page(self, size: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        entries = self.log.entries
        end = int(self.state.get("e", self.mailbox.seq))
        index = bisect.bisect_right(entries, int(self.state["c"]), key=_seq)
        values: list[dict[str, Any]] = []
        while index < len(entries) and entries[index].seq <= end and len(values) < size:
            entry = entries[index]
            index += 1
            if self.log.latest.get(entry.message_id) != entry.seq:
                continue  # superseded: a newer entry reports this message
            if entry.kind == "removed":
                values.append(self.removed(entry))
                continue
            msg = self.current(entry)
            if msg is not None and self.matches(msg):
                values.append(self.render(msg))
        if index < len(entries) and entries[index].seq <= end:
            return values, {"ph": "d", "c": entries[index - 1].seq, "e": end}
        return values, {"ph": "d", "c": end, "done": True}


def _initial_state(ctx: Ctx, mailbox: Mailbox) -> dict[str, Any]:
    query = ctx.req.query
    for name in query:
        if name.startswith("$") and name not in _ALLOWED_INITIAL:
            raise GraphError(
                400,
                "ErrorInvalidUrlQuery",
                f"The query parameter '{name}' is not supported with delta for 'Messages'.",
            )
    state: dict[str, Any] = {"ph": "i", "c": mailbox.seq + 1, "s": mailbox.seq, "n": 0}
    if "$select" in query:
        state["sel"] = select_fields(
            query,
            allowed=MESSAGE_SELECTABLE,
            default=MESSAGE_DEFAULT,
            type_name=MESSAGE_TYPE,
            code="RequestBroker--ParseUri",
        )
    raw_filter = query.get("$filter")
    if raw_filter is not None:
        match = _FILTER.match(raw_filter)
        if match is None:
            raise _unsupported("$filter", "receivedDateTime ge value")
        try:
            after = parse_datetime_literal(match.group(2))
        except ValueError as exc:
            raise _unsupported("$filter", "receivedDateTime ge value") from exc
        state["fo"] = match.group(1).lower()
        state["fv"] = after.isoformat()
    raw_order = query.get("$orderby")
    if raw_order is not None and _ORDER.match(raw_order) is None:
        raise _unsupported("$orderby", "receivedDateTime desc")
    top = parse_top(query, maximum=ctx.state.config.max_page_size)
    if top is not None:
        state["ps"] = top
    return state


def _load_state(ctx: Ctx, token: str, folder: Folder, mailbox: Mailbox) -> dict[str, Any]:
    data = decode_token(token)
    if data is None or not isinstance(data.get("c"), int) or data.get("ph") not in ("i", "d"):
        raise _gone("unknown", mailbox)
    if data.get("u") != mailbox.user_id or data.get("f") != folder.id:
        raise _gone(data.get("g"), mailbox)
    epoch = data.get("g")
    if not isinstance(epoch, int) or epoch < mailbox.sync_state_epoch:
        raise _gone(epoch, mailbox)
    issued = data.get("t")
    lifetime = ctx.state.config.delta_token_lifetime_days * 86_400
    if not isinstance(issued, int | float) or issued < ctx.state.clock.time() - lifetime:
        raise _gone(epoch, mailbox)
    if data["ph"] == "i" and not (
        isinstance(data.get("s"), int) and isinstance(data.get("n"), int)
    ):
        raise _gone(epoch, mailbox)
    if not _well_formed_options(data):
        raise _gone(epoch, mailbox)
    return data


def _well_formed_options(data: dict[str, Any]) -> bool:
    """Whether a token's optional parts have the shapes this module writes."""
    if "e" in data and not isinstance(data["e"], int):
        return False
    if "ps" in data and not (isinstance(data["ps"], int) and data["ps"] > 0):
        return False
    if "sel" in data and not (
        isinstance(data["sel"], list) and all(isinstance(s, str) for s in data["sel"])
    ):
        return False
    if "fv" in data or "fo" in data:
        if data.get("fo") not in ("ge", "gt") or not isinstance(data.get("fv"), str):
            return False
        try:
            parse_datetime_literal(data["fv"])
        except ValueError:
            return False
    return True


def _link_base_for(ctx: Ctx, tail: str) -> str:
    """``https://.../v1.0/me<tail>`` or ``.../users/{key}<tail>``, as the client addressed it."""
    split = split_mailbox(normalize_path(ctx.req.path))
    key = split[0] if split else "me"
    prefix = "/me" if key == "me" else f"/users/{quote(key, safe='@')}"
    return ctx.link(f"{prefix}{tail}")


def _link_base(ctx: Ctx, folder: Folder) -> str:
    return _link_base_for(ctx, f"/mailFolders('{folder.id}')/messages/delta")


@route("GET", "/mailFolders/{folder}/messages/delta", mailbox=True, op="read")
@route("GET", "/mailFolders/{folder}/messages/delta()", mailbox=True, op="read")
def folder_delta(ctx: Ctx) -> GraphResponse:
    mailbox = ctx.mailbox_user.mailbox
    folder = find_folder(mailbox, ctx.params["folder"])
    query = ctx.req.query
    skip, delta = query.get("$skiptoken"), query.get("$deltatoken")
    if skip is not None and delta is not None:
        raise GraphError(
            400, "ErrorInvalidUrlQuery", "Only one of $skiptoken and $deltatoken can be given."
        )
    token = skip if skip is not None else delta
    state = (
        _initial_state(ctx, mailbox) if token is None else _load_state(ctx, token, folder, mailbox)
    )

    headers: dict[str, str] = {}
    preferred = ctx.req.max_page_size()
    if preferred is not None:
        size = min(preferred, ctx.state.config.max_page_size)
        headers["Preference-Applied"] = f"odata.maxpagesize={size}"
    else:
        size = int(state.get("ps") or ctx.state.config.default_page_size)

    sync = _Sync(ctx, folder, state)
    if state["ph"] == "i":
        values, following = sync.initial_page(size)
    else:
        values, following = sync.incremental_page(size)
    done = bool(following.pop("done", False))
    following.update(
        {
            "u": mailbox.user_id,
            "f": folder.id,
            "g": mailbox.sync_state_epoch,
            "t": int(ctx.state.clock.time()),
        }
    )
    for baked in ("sel", "fo", "fv", "ps"):
        if baked in state:
            following[baked] = state[baked]
    link = f"{_link_base(ctx, folder)}?{'$deltatoken' if done else '$skiptoken'}="
    link += encode_token(following)
    body: dict[str, Any] = {"@odata.context": ctx.link("/$metadata#Collection(message)")}
    if not done:
        body["@odata.nextLink"] = link
    body["value"] = values
    if done:
        body["@odata.deltaLink"] = link
    applied = sync.rendering.applied().get("Preference-Applied")
    if applied:
        headers["Preference-Applied"] = ", ".join(
            v for v in (headers.get("Preference-Applied"), applied) if v
        )
    return GraphResponse(200, body, headers)


def build_control_routes(state: EmulatorState) -> list[BaseRoute]:
    """``POST /_emulator/mailboxes/{id | upn}/sync-state/reset``: invalidate delta tokens.

    Increments the mailbox's ``sync_state_epoch``; every delta token issued before answers
    410 ``SyncStateNotFound`` afterwards, as when Exchange loses a sync state.
    """

    async def reset(request: Request) -> JSONResponse:
        key = request.path_params["mailbox"]
        with state.store.lock:
            found = state.store.find_user(key)
            if found is None:
                return JSONResponse({"error": f"unknown mailbox '{key}'"}, status_code=404)
            user = found[1]
            user.mailbox.sync_state_epoch += 1
            epoch = user.mailbox.sync_state_epoch
        return JSONResponse({"userId": user.id, "syncStateEpoch": epoch})

    return [Route("/_emulator/mailboxes/{mailbox}/sync-state/reset", reset, methods=["POST"])]
