"""``/mailFolders``: list, get, child folders and folder creation (graph.md 3.4).

Folders are addressed by id or by a well-known name (``inbox``, ``deleteditems``,
``recoverableitemsdeletions`` ...; case-insensitive, locale-independent), wherever Graph
accepts a folder id, including a move's ``DestinationId``. :func:`find_folder` is the one
lookup every mail module uses: a well-known name the mailbox does not have, or a well-formed
id naming nothing, answers 404 ``ErrorItemNotFound``; something that cannot be an id answers
400 ``ErrorInvalidIdMalformed`` (rule in :func:`serialize.looks_like_id`).

Listing ``/mailFolders`` returns the children of ``msgfolderroot`` in display-name order,
hidden folders only with ``?includeHiddenFolders=true``, ten per page by default with an opaque
``$skiptoken`` in ``@odata.nextLink``; ``$top``, ``$skip``, ``$select``, ``$filter`` and
``$orderby`` (on ``displayName``, ``isHidden``, ``parentFolderId`` and the counts) and
``$count`` apply. Recoverable Items is
outside the root, so it is reachable by name but never listed.

Creating a folder (``POST /mailFolders`` or ``.../childFolders``) answers 201 with the folder.
A sibling with the same name, compared case-insensitively and including hidden folders, answers
``ErrorFolderExists`` "A folder with the specified name already exists., Could not create
folder '<name>'." with ``config.folder_exists_status`` (reported as 409 by some and 400 by
others). An empty ``displayName`` answers 400 ``ErrorInvalidRequest`` (Exchange's exact wording
for that case is not documented).

Moving a folder (``POST /mailFolders/{id}/move`` ``{"destinationId"}``) answers 201 with the
folder, its id unchanged (container ids are stable). A well-known folder, or a move into the
folder's own subtree, answers 400 ``ErrorMoveCopyFailed`` (the emulator's choice; Exchange's
wording is not documented); a sibling with the same name ``ErrorFolderExists``. Moving a folder
into Deleted Items or Recoverable Items is how Outlook deletes it: every message it holds is
recorded in the deletion audit.

Renaming (``PATCH /mailFolders/{id}`` ``{"displayName"}``) and deleting (``DELETE
/mailFolders/{id}``: into Deleted Items, from there into Recoverable Items, audited) are
described at :func:`update_folder` and :func:`delete_folder`; well-known folders can be neither.
"""

from __future__ import annotations

from typing import Any

from m365sim.errors import GraphError, invalid_id, item_not_found
from m365sim.graph.dispatch import Ctx, GraphResponse, route
from m365sim.graph.odata import (
    check_inefficient_filter,
    parse_orderby,
    select_fields,
    sort_key,
)
from m365sim.graph.serialize import (
    FOLDER_ENTITY,
    FOLDER_PROPERTIES,
    FOLDER_TYPE,
    action_parameters,
    body_read_error,
    collection_response,
    context_url,
    folder_json,
    folder_values,
    looks_like_id,
    query_filter,
    read_bool,
    read_string,
    select_suffix,
    unknown_body_property,
)
from m365sim.store import Folder, Mailbox

# Every well-known name Graph documents (graph.md 3.4); the emulator's mailboxes hold a subset.
WELL_KNOWN_NAMES = frozenset(
    {
        "archive",
        "clutter",
        "conflicts",
        "conversationhistory",
        "deleteditems",
        "drafts",
        "inbox",
        "junkemail",
        "localfailures",
        "msgfolderroot",
        "outbox",
        "recoverableitemsdeletions",
        "scheduled",
        "searchfolders",
        "sentitems",
        "serverfailures",
        "syncissues",
    }
)
_READ_ONLY = {
    "id",
    "parentfolderid",
    "childfoldercount",
    "unreaditemcount",
    "totalitemcount",
    "sizeinbytes",
}


def find_folder(mailbox: Mailbox, key: str) -> Folder:
    """A folder by id or well-known name, or Graph's 404/400."""
    folder = mailbox.folder(key)
    if folder is not None:
        return folder
    if key.lower() in WELL_KNOWN_NAMES or looks_like_id(key):
        raise item_not_found()
    raise invalid_id()


def in_ipm_tree(mailbox: Mailbox, folder: Folder) -> bool:
    """Whether the folder lies under ``msgfolderroot`` (Recoverable Items does not)."""
    root = mailbox.root_id()
    current: Folder | None = folder
    while current is not None:
        if current.id == root:
            return True
        current = mailbox.folders.get(current.parent_id) if current.parent_id else None
    return False


def _folder_fields(ctx: Ctx) -> list[str] | None:
    if "$select" not in ctx.req.query:
        return None
    return select_fields(
        ctx.req.query,
        allowed=FOLDER_PROPERTIES,
        default=FOLDER_PROPERTIES,
        type_name=FOLDER_TYPE,
        code="RequestBroker--ParseUri",
    )


def _list(ctx: Ctx, parent: Folder, context_tail: str) -> GraphResponse:
    mailbox = ctx.mailbox_user.mailbox
    query = ctx.req.query
    include_hidden = query.get("includeHiddenFolders", "").lower() == "true"
    fields = _folder_fields(ctx)
    children = sorted(
        mailbox.children(parent.id, include_hidden=include_hidden),
        key=lambda f: f.display_name.lower(),
    )
    values = {f.id: folder_values(mailbox, f) for f in children}
    parsed = query_filter(ctx, FOLDER_ENTITY)
    raw_order = query.get("$orderby")
    order = parse_orderby(raw_order, FOLDER_ENTITY) if raw_order and raw_order.strip() else []
    check_inefficient_filter(parsed, order)
    if parsed is not None:
        children = [f for f in children if parsed.matches(values[f.id].__getitem__)]
    if order:
        children.sort(key=sort_key(order, lambda f, name: values[f.id][name]))
    context = context_url(ctx, context_tail + select_suffix(query, fields))
    return collection_response(
        ctx,
        children,
        lambda f: folder_json(mailbox, f, fields),
        context=context,
        default_size=ctx.state.config.default_page_size,
    )


@route("GET", "/mailFolders", mailbox=True, op="read")
def list_folders(ctx: Ctx) -> GraphResponse:
    mailbox = ctx.mailbox_user.mailbox
    return _list(ctx, mailbox.folders[mailbox.root_id()], "mailFolders")


@route("GET", "/mailFolders/{folder}/childFolders", mailbox=True, op="read")
def list_child_folders(ctx: Ctx) -> GraphResponse:
    parent = find_folder(ctx.mailbox_user.mailbox, ctx.params["folder"])
    return _list(ctx, parent, f"mailFolders('{parent.id}')/childFolders")


def _single(ctx: Ctx, folder: Folder, context_tail: str, status: int = 200) -> GraphResponse:
    fields = _folder_fields(ctx)
    body: dict[str, Any] = {
        "@odata.context": context_url(
            ctx, context_tail + select_suffix(ctx.req.query, fields) + "/$entity"
        )
    }
    body.update(folder_json(ctx.mailbox_user.mailbox, folder, fields))
    return GraphResponse(status, body)


@route("GET", "/mailFolders/{folder}", mailbox=True, op="read")
def get_folder(ctx: Ctx) -> GraphResponse:
    folder = find_folder(ctx.mailbox_user.mailbox, ctx.params["folder"])
    return _single(ctx, folder, "mailFolders")


@route("GET", "/mailFolders/{folder}/childFolders/{child}", mailbox=True, op="read")
def get_child_folder(ctx: Ctx) -> GraphResponse:
    mailbox = ctx.mailbox_user.mailbox
    parent = find_folder(mailbox, ctx.params["folder"])
    child = find_folder(mailbox, ctx.params["child"])
    if child.parent_id != parent.id:
        raise item_not_found()
    return _single(ctx, child, f"mailFolders('{parent.id}')/childFolders")


def _create(ctx: Ctx, parent: Folder, context_tail: str) -> GraphResponse:
    body = ctx.json()
    display_name: str | None = None
    hidden = False
    for key, value in body.items():
        if key.startswith("@odata."):
            if key == "@odata.type" and str(value).lstrip("#").lower() != FOLDER_TYPE.lower():
                raise body_read_error(
                    f"A type named '{value}' could not be resolved by the model. When a model "
                    "is available, each type name must resolve to a valid type."
                )
            continue
        low = key.lower()
        if low == "displayname":
            display_name = read_string(value)
        elif low == "ishidden":
            hidden = read_bool(value)
        elif low in _READ_ONLY:
            raise GraphError(400, "ErrorInvalidPropertySet", "Set action is invalid for property.")
        else:
            raise unknown_body_property(key, FOLDER_TYPE)
    if display_name is None:
        raise GraphError(400, "ErrorInvalidRequest", "The folder name can't be empty.")
    check_folder_name(display_name)
    mailbox = ctx.mailbox_user.mailbox
    folder = ctx.state.store.create_folder(mailbox, display_name, parent.id, hidden=hidden)
    if folder is None:
        raise GraphError(
            ctx.state.config.folder_exists_status,
            "ErrorFolderExists",
            "A folder with the specified name already exists., Could not create folder "
            f"'{display_name}'.",
        )
    return _single(ctx, folder, context_tail, status=201)


@route("POST", "/mailFolders", mailbox=True, op="write")
def create_folder(ctx: Ctx) -> GraphResponse:
    mailbox = ctx.mailbox_user.mailbox
    return _create(ctx, mailbox.folders[mailbox.root_id()], "mailFolders")


@route("POST", "/mailFolders/{folder}/childFolders", mailbox=True, op="write")
def create_child_folder(ctx: Ctx) -> GraphResponse:
    parent = find_folder(ctx.mailbox_user.mailbox, ctx.params["folder"])
    return _create(ctx, parent, f"mailFolders('{parent.id}')/childFolders")


@route("POST", "/mailFolders/{folder}/move", mailbox=True, op="write")
def move_folder(ctx: Ctx) -> GraphResponse:
    mailbox = ctx.mailbox_user.mailbox
    folder = find_folder(mailbox, ctx.params["folder"])
    params = action_parameters(ctx.json(), ["DestinationId"], "move")
    key = read_string(params.get("destinationid"))
    if not key:
        raise invalid_id()
    destination = find_folder(mailbox, key)
    store = ctx.state.store
    with store.lock:
        was_deleted = mailbox.deletion_folder(folder.id)
        refused = store.move_folder(mailbox, folder, destination)
        if refused == "exists":
            raise GraphError(
                ctx.state.config.folder_exists_status,
                "ErrorFolderExists",
                "A folder with the specified name already exists.",
            )
        if refused is not None:
            raise GraphError(400, "ErrorMoveCopyFailed", "The folder can't be moved there.")
        deleted_in = mailbox.deletion_folder(destination.id)
        if deleted_in is not None and was_deleted is None:
            for moved in mailbox.subtree(folder.id):
                for message_id in moved.messages:
                    store.record_deletion(
                        ctx.tenant, mailbox, message_id, f"move:{deleted_in}", ctx.caller.client_id
                    )
    return _single(ctx, folder, "mailFolders", status=201)


@route("PATCH", "/mailFolders/{folder}", mailbox=True, op="write")
def update_folder(ctx: Ctx) -> GraphResponse:
    """Rename a folder: ``{"displayName"}`` -> 200 and the folder."""
    mailbox = ctx.mailbox_user.mailbox
    folder = find_folder(mailbox, ctx.params["folder"])
    display_name: str | None = None
    for key, value in ctx.json().items():
        if key.startswith("@odata."):
            if key == "@odata.type" and str(value).lstrip("#").lower() != FOLDER_TYPE.lower():
                raise body_read_error(
                    f"A type named '{value}' could not be resolved by the model. When a model "
                    "is available, each type name must resolve to a valid type."
                )
            continue
        low = key.lower()
        if low == "displayname":
            display_name = read_string(value) or ""  # null: no name at all
        elif low == "id" and value == folder.id:
            continue
        elif low in _READ_ONLY or low == "ishidden":  # isHidden: settable only at creation
            raise GraphError(400, "ErrorInvalidPropertySet", "Set action is invalid for property.")
        else:
            raise unknown_body_property(key, FOLDER_TYPE)
    if display_name is not None:
        check_folder_name(display_name)
        if folder.well_known is not None:
            raise GraphError(400, "ErrorInvalidRequest", "Distinguished folders cannot be renamed.")
        if not ctx.state.store.rename_folder(mailbox, folder, display_name):
            raise GraphError(
                ctx.state.config.folder_exists_status,
                "ErrorFolderExists",
                "A folder with the specified name already exists.",
            )
    return _single(ctx, folder, "mailFolders")


@route("DELETE", "/mailFolders/{folder}", mailbox=True, op="write")
def delete_folder(ctx: Ctx) -> GraphResponse:
    """Delete a folder as Outlook does: it moves, with everything in it, into Deleted Items
    (from there: into Recoverable Items, out of the mailbox's folder tree). Every message it
    holds and the folder itself are recorded in the deletion audit (``deleteFolder``)."""
    mailbox = ctx.mailbox_user.mailbox
    folder = find_folder(mailbox, ctx.params["folder"])
    if folder.well_known is not None:
        raise GraphError(
            400, "ErrorDeleteDistinguishedFolder", "Distinguished folders cannot be deleted."
        )
    store = ctx.state.store
    with store.lock:
        inside = mailbox.deletion_folder(folder.id)
        if inside == "recoverableitemsdeletions":
            raise item_not_found()  # already out of the mailbox's folder tree
        target_name = "recoverableitemsdeletions" if inside is not None else "deleteditems"
        target = find_folder(mailbox, target_name)
        folder.display_name = store.free_name(mailbox, target.id, folder.display_name)
        refused = store.move_folder(mailbox, folder, target)
        if refused is not None:  # cannot happen: the name is free and the folder not special
            raise GraphError(400, "ErrorMoveCopyFailed", "The folder can't be deleted.")
        if target_name == "recoverableitemsdeletions":
            for moved in mailbox.subtree(folder.id):
                store.log_folder(mailbox, moved.id, "removed")
        client = ctx.caller.client_id
        store.record_deletion(ctx.tenant, mailbox, folder.id, "deleteFolder", client)
        for moved in mailbox.subtree(folder.id):
            for message_id in moved.messages:
                store.record_deletion(ctx.tenant, mailbox, message_id, "deleteFolder", client)
    return GraphResponse(204)


MAX_FOLDER_NAME = 255


def check_folder_name(display_name: str) -> None:
    """What Exchange refuses as a folder name: empty (or blank), longer than 255 characters
    (the MAPI display name limit), or holding control characters. Wording is the emulator's."""
    if not display_name.strip():
        raise GraphError(400, "ErrorInvalidRequest", "The folder name can't be empty.")
    if len(display_name) > MAX_FOLDER_NAME:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            f"The folder name is longer than {MAX_FOLDER_NAME} characters.",
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in display_name):
        raise GraphError(
            400, "ErrorInvalidRequest", "The folder name can't contain control characters."
        )
