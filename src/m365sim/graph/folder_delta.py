"""Delta query for the folder hierarchy: ``GET /mailFolders/delta`` (also ``delta()``).

Microsoft's ``mailFolder: delta``: the first request returns every folder of the mailbox's
folder tree (flattened, each with its ``parentFolderId``), in pages with ``@odata.nextLink``
until the last page, which carries ``@odata.deltaLink``; replaying that link returns the
folders created, renamed or moved since (as full folders) and those removed from the tree
(``{"@odata.type": "#microsoft.graph.mailFolder", "id": ..., "@removed": {"reason":
"deleted"}}``). ``$select`` and ``Prefer: odata.maxpagesize`` apply and are baked into the
links; other query options answer 400 ``ErrorInvalidUrlQuery``.

How it works: :attr:`Mailbox.folder_log` records every change to the hierarchy (creation,
rename, move, delete), numbered by the mailbox's change sequence. The initial round lists the
folders whose newest change is at or before the round's snapshot, ordered by that change
(a folder changed during the round is reported by the next round instead); later rounds
replay the log from the previous round's position, skipping superseded entries. Tokens are
opaque and checked like message delta tokens (another mailbox, a reset sync state, an expired
or garbled token: 410 ``SyncStateNotFound``).

Deviations: changes of the counts alone (``unreadItemCount``, ``totalItemCount``) are not
reported (Exchange's rule is not documented); hidden folders are left out as in listings;
``msgfolderroot`` itself is not returned.
"""

from __future__ import annotations

from typing import Any

from m365sim.errors import GraphError
from m365sim.graph.delta import _gone, _link_base_for
from m365sim.graph.dispatch import Ctx, GraphResponse, route
from m365sim.graph.folders import in_ipm_tree
from m365sim.graph.odata import decode_token, encode_token, select_fields
from m365sim.graph.serialize import FOLDER_PROPERTIES, FOLDER_TYPE, folder_json
from m365sim.store import Folder, Mailbox

_KIND = "fd"  # marks folder-delta tokens apart from message-delta tokens


def _visible(mailbox: Mailbox, folder: Folder) -> bool:
    return folder.id != mailbox.root_id() and not folder.is_hidden and in_ipm_tree(mailbox, folder)


def _initial(ctx: Ctx, mailbox: Mailbox) -> dict[str, Any]:
    query = ctx.req.query
    for name in query:
        if name.startswith("$") and name != "$select":
            raise GraphError(
                400,
                "ErrorInvalidUrlQuery",
                f"The query parameter '{name}' is not supported with delta for 'MailFolders'.",
            )
    state: dict[str, Any] = {"ph": "i", "s": mailbox.seq, "c": [-1, ""]}
    if "$select" in query:
        state["sel"] = select_fields(
            query,
            allowed=FOLDER_PROPERTIES,
            default=FOLDER_PROPERTIES,
            type_name=FOLDER_TYPE,
            code="RequestBroker--ParseUri",
        )
    return state


def _load(ctx: Ctx, token: str, mailbox: Mailbox) -> dict[str, Any]:
    data = decode_token(token)
    if data is None or data.get("k") != _KIND or data.get("u") != mailbox.user_id:
        raise _gone("unknown", mailbox)
    epoch = data.get("g")
    if not isinstance(epoch, int) or epoch < mailbox.sync_state_epoch:
        raise _gone(epoch, mailbox)
    issued = data.get("t")
    lifetime = ctx.state.config.delta_token_lifetime_days * 86_400
    if not isinstance(issued, int | float) or issued < ctx.state.clock.time() - lifetime:
        raise _gone(epoch, mailbox)
    phase, cursor = data.get("ph"), data.get("c")
    if phase == "i":
        ok = (
            isinstance(data.get("s"), int)
            and isinstance(cursor, list)
            and len(cursor) == 2
            and isinstance(cursor[0], int)
            and isinstance(cursor[1], str)
        )
    else:
        ok = phase == "d" and isinstance(cursor, int) and isinstance(data.get("e", 0), int)
    sel = data.get("sel")
    if sel is not None and not (
        isinstance(sel, list) and all(isinstance(s, str) and s in FOLDER_PROPERTIES for s in sel)
    ):
        ok = False
    if not ok:
        raise _gone(epoch, mailbox)
    return data


def _render(mailbox: Mailbox, folder: Folder, fields: list[str] | None) -> dict[str, Any]:
    item: dict[str, Any] = {"@odata.type": f"#{FOLDER_TYPE}"}
    item.update(folder_json(mailbox, folder, fields))
    return item


def _removed(folder_id: str) -> dict[str, Any]:
    return {"@odata.type": f"#{FOLDER_TYPE}", "id": folder_id, "@removed": {"reason": "deleted"}}


@route("GET", "/mailFolders/delta", mailbox=True, op="read")
@route("GET", "/mailFolders/delta()", mailbox=True, op="read")
def folders_delta(ctx: Ctx) -> GraphResponse:
    mailbox = ctx.mailbox_user.mailbox
    query = ctx.req.query
    skip, delta = query.get("$skiptoken"), query.get("$deltatoken")
    if skip is not None and delta is not None:
        raise GraphError(
            400, "ErrorInvalidUrlQuery", "Only one of $skiptoken and $deltatoken can be given."
        )
    token = skip if skip is not None else delta
    state = _initial(ctx, mailbox) if token is None else _load(ctx, token, mailbox)
    sel = state.get("sel")
    fields: list[str] | None = list(sel) if isinstance(sel, list) else None
    headers: dict[str, str] = {}
    size = ctx.state.config.default_page_size
    preferred = ctx.req.max_page_size()
    if preferred is not None:
        size = min(preferred, ctx.state.config.max_page_size)
        headers["Preference-Applied"] = f"odata.maxpagesize={size}"
    log = mailbox.folder_log
    values: list[dict[str, Any]] = []
    following: dict[str, Any]
    done: bool
    if state["ph"] == "i":
        snapshot = int(state["s"])
        after = (int(state["c"][0]), str(state["c"][1]))
        pending = sorted(
            (log.latest.get(f.id, 0), f.id)
            for f in mailbox.folders.values()
            if _visible(mailbox, f) and log.latest.get(f.id, 0) <= snapshot
        )
        pending = [p for p in pending if p > after]
        page = pending[:size]
        values = [_render(mailbox, mailbox.folders[fid], fields) for _, fid in page]
        done = len(pending) <= size
        if done:
            following = {"ph": "d", "c": snapshot}
        else:
            following = {"ph": "i", "s": snapshot, "c": list(page[-1])}
    else:
        position = int(state["c"])
        end = int(state.get("e", mailbox.seq))
        done = True
        last = position
        for entry in log.entries:
            if entry.seq <= position or entry.seq > end:
                continue
            if len(values) >= size:
                done = False
                break
            last = entry.seq
            if log.latest.get(entry.message_id) != entry.seq:
                continue  # superseded: a newer entry reports this folder
            folder = mailbox.folders.get(entry.message_id)
            if entry.kind == "upsert" and folder is not None and folder.is_hidden:
                continue  # never listed, so never reported
            if entry.kind == "upsert" and folder is not None and _visible(mailbox, folder):
                values.append(_render(mailbox, folder, fields))
            else:
                values.append(_removed(entry.message_id))
        following = {"ph": "d", "c": end} if done else {"ph": "d", "c": last, "e": end}
    following.update(
        {
            "k": _KIND,
            "u": mailbox.user_id,
            "g": mailbox.sync_state_epoch,
            "t": int(ctx.state.clock.time()),
        }
    )
    if fields is not None:
        following["sel"] = fields
    link = f"{_link_base_for(ctx, '/mailFolders/delta')}?"
    link += f"{'$deltatoken' if done else '$skiptoken'}={encode_token(following)}"
    body: dict[str, Any] = {"@odata.context": ctx.link("/$metadata#Collection(mailFolder)")}
    if not done:
        body["@odata.nextLink"] = link
    body["value"] = values
    if done:
        body["@odata.deltaLink"] = link
    return GraphResponse(200, body, headers)
