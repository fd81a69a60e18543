"""The Outlook-like viewer: look into the emulated mailboxes with a browser.

Server-rendered pages (Starlette + Jinja2, no JavaScript at all):

* ``/viewer`` - tenants, their mailboxes (people and shared) with unread counts, and the apps;
* ``/viewer/mailboxes/{id | upn}`` - the folder tree (nested, unread counts) and the message
  list of one folder (``?folder=``, default the Inbox; 50 a page, newest first): sender,
  subject, received time, unread in bold, category chips in their master category's colour;
* ``/viewer/mailboxes/{id}/messages/{message id}`` - one message: headers, categories,
  attachments (download links) and the body; and, as its owner would in Outlook, forms to
  change its categories (``POST .../categories``) or move it to another folder
  (``POST .../move``). Both go through the store like a Graph PATCH or move: the change shows
  up in delta and in change notifications (how Postroom learns from a person's correction);
  cross-site posts (an ``Origin`` of another site) are refused;
* ``/viewer/signin`` - only when the emulator has a control token: every viewer page then
  needs it (a cookie derived from it, or the bearer header; :mod:`m365sim.control.guard`);
* ``/viewer/outbound``, ``/viewer/deletions``, ``/viewer/requests`` - what left the mailboxes,
  what was deleted, and the Graph request log.

Category colours follow Outlook's presets (graph.md 3.7: preset0 Red ... preset24
DarkCranberry); a category without a master-list entry shows grey, as in Outlook.

Safety: everything is escaped by Jinja's autoescaping. An HTML body is shown in an
``<iframe sandbox srcdoc=...>`` (no scripts, no same-origin access, no forms or pop-ups),
``cid:`` references to inline images are rewritten to the attachment URL, and every page
carries a Content-Security-Policy without any script source. Attachments are served as
downloads (``Content-Disposition: attachment``, ``nosniff``) except raster images, so a
malicious HTML or SVG attachment never runs in the viewer's origin.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from m365sim.control.guard import (
    VIEWER_COOKIE,
    same_origin,
    token_matches,
    viewer_cookie_value,
)
from m365sim.state import EmulatorState
from m365sim.store import Folder, Mailbox, Message, Store, Tenant, User

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATE_DIR = PACKAGE_DIR / "templates" / "viewer"
STATIC_DIR = PACKAGE_DIR / "static"
PAGE_SIZE = 50
MAX_CATEGORIES = 25
MAX_CATEGORY_NAME = 255

# Outlook's category colours, preset0 .. preset24 (graph.md 3.7); "none" and unknown are grey.
CATEGORY_COLORS: dict[str, tuple[str, str]] = {
    "preset0": ("Red", "#d13438"),
    "preset1": ("Orange", "#f7630c"),
    "preset2": ("Brown", "#8e562e"),
    "preset3": ("Yellow", "#ffb900"),
    "preset4": ("Green", "#107c10"),
    "preset5": ("Teal", "#038387"),
    "preset6": ("Olive", "#6b8e23"),
    "preset7": ("Blue", "#0078d4"),
    "preset8": ("Purple", "#8764b8"),
    "preset9": ("Cranberry", "#c30052"),
    "preset10": ("Steel", "#69797e"),
    "preset11": ("DarkSteel", "#374649"),
    "preset12": ("Gray", "#7a7574"),
    "preset13": ("DarkGray", "#5d5a58"),
    "preset14": ("Black", "#1b1a19"),
    "preset15": ("DarkRed", "#750b1c"),
    "preset16": ("DarkOrange", "#ca5010"),
    "preset17": ("DarkBrown", "#4d291c"),
    "preset18": ("DarkYellow", "#c19c00"),
    "preset19": ("DarkGreen", "#0b6a0b"),
    "preset20": ("DarkTeal", "#005b70"),
    "preset21": ("DarkOlive", "#4b5320"),
    "preset22": ("DarkBlue", "#003966"),
    "preset23": ("DarkPurple", "#32145a"),
    "preset24": ("DarkCranberry", "#6d0f3a"),
}
NO_COLOR = ("None", "#c8c6c4")

CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
)
_CID = re.compile(r"""cid:([^"'\s)>]+)""", re.IGNORECASE)
_INLINE_IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"}


@dataclass
class Chip:
    name: str
    color_name: str
    background: str
    foreground: str


@dataclass
class FolderNode:
    folder: Folder
    name: str
    unread: int
    total: int
    children: list[FolderNode] = field(default_factory=list)


def _foreground(background: str) -> str:
    """Black or white text, whichever reads better on the chip colour (WCAG luminance)."""
    r, g, b = (int(background[i : i + 2], 16) / 255 for i in (1, 3, 5))

    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    luminance = 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)
    return "#000000" if luminance > 0.179 else "#ffffff"


def category_chips(mailbox: Mailbox, names: list[str]) -> list[Chip]:
    master = {c.display_name.lower(): c.color for c in mailbox.categories.values()}
    chips = []
    for name in names:
        color_name, hex_color = CATEGORY_COLORS.get(master.get(name.lower(), "none"), NO_COLOR)
        chips.append(Chip(name, color_name, hex_color, _foreground(hex_color)))
    return chips


def _unread(mailbox: Mailbox, folder: Folder) -> int:
    count = 0
    for mid in folder.messages:
        msg = mailbox.messages.get(mid)
        if msg is not None and not msg.is_read:
            count += 1
    return count


def folder_tree(mailbox: Mailbox) -> list[FolderNode]:
    def node(folder: Folder) -> FolderNode:
        children = sorted(mailbox.children(folder.id), key=_folder_order)
        return FolderNode(
            folder=folder,
            name=folder.display_name,
            unread=_unread(mailbox, folder),
            total=len(folder.messages),
            children=[node(c) for c in children],
        )

    root = mailbox.folders[mailbox.root_id()]
    return [node(f) for f in sorted(mailbox.children(root.id), key=_folder_order)]


def folder_choices(mailbox: Mailbox) -> list[tuple[str, str]]:
    """(folder id, path such as ``Inbox/Orders``) for every visible folder, in tree order."""
    out: list[tuple[str, str]] = []

    def walk(nodes: list[FolderNode], prefix: str) -> None:
        for n in nodes:
            path = f"{prefix}{n.name}"
            out.append((n.folder.id, path))
            walk(n.children, f"{path}/")

    walk(folder_tree(mailbox), "")
    return out


_ORDER = ("inbox", "drafts", "sentitems", "deleteditems", "junkemail", "archive")


def _folder_order(folder: Folder) -> tuple[int, str]:
    if folder.well_known in _ORDER:
        return _ORDER.index(folder.well_known), ""
    if folder.well_known is not None:
        return len(_ORDER), folder.display_name.lower()
    return len(_ORDER) + 1, folder.display_name.lower()


def _when(value: datetime | float | None) -> str:
    """Dates in UTC, as the emulator keeps them (no browser time zone without scripts)."""
    if value is None:
        return ""
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, tz=UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024 / 1024:.1f} MB"


def _people(recipients: list[Any]) -> str:
    return "; ".join(
        f"{r.name} <{r.address}>" if r.name and r.name != r.address else r.address
        for r in recipients
    )


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=select_autoescape(enabled_extensions=("html",), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["size"] = _size
    env.filters["people"] = _people
    env.filters["q"] = lambda v: quote(str(v), safe="=")
    return env


def _message_url(user: User, msg: Message) -> str:
    return f"/viewer/mailboxes/{quote(user.id)}/messages/{quote(msg.immutable_id, safe='=')}"


_NOTICES = {"categories": "Categories changed.", "move": "Moved."}


class Viewer:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.store: Store = state.store
        self.env = make_environment()

    # ----------------------------------------------------------------- rendering helpers
    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(**context)
        response = HTMLResponse(html, status_code=status)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    def not_found(self, what: str) -> HTMLResponse:
        return self.render("error.html", 404, title="Not found", message=what)

    def _mailbox(self, key: str) -> tuple[Tenant, User] | None:
        return self.store.find_user(key)

    def _message(self, request: Request) -> tuple[Tenant, User, Message] | HTMLResponse:
        """The ``key`` mailbox's ``mid`` message, or the 404 page (call under the store lock)."""
        found = self._mailbox(request.path_params["key"])
        if found is None:
            return self.not_found("There is no such mailbox.")
        tenant, user = found
        msg = user.mailbox.message(request.path_params["mid"])
        if msg is None:
            return self.not_found("There is no such message in this mailbox (deleted?).")
        return tenant, user, msg

    def _sender_label(self, msg: Message) -> str:
        person = msg.from_ or msg.sender
        if person is None:
            return "(no sender)"
        return person.name or person.address or "(no sender)"

    # ----------------------------------------------------------------- pages
    async def index(self, request: Request) -> Response:
        with self.store.lock:
            tenants = []
            for tenant in self.store.tenants.values():
                rows = []
                for user in sorted(
                    tenant.users.values(),
                    key=lambda u: (u.is_shared_mailbox, u.display_name.lower()),
                ):
                    inbox = user.mailbox.folder("inbox")
                    rows.append(
                        {
                            "user": user,
                            "unread": _unread(user.mailbox, inbox) if inbox else 0,
                            "total": len(user.mailbox.messages),
                        }
                    )
                tenants.append({"tenant": tenant, "mailboxes": rows})
            apps = list(self.store.apps.values())
            return self.render(
                "index.html",
                title="Mailboxes",
                tenants=tenants,
                apps=apps,
                outbound=len(self.store.outbound),
                deletions=len(self.store.deletions),
            )

    async def mailbox(self, request: Request) -> Response:
        with self.store.lock:
            found = self._mailbox(request.path_params["key"])
            if found is None:
                return self.not_found("There is no such mailbox.")
            tenant, user = found
            mailbox = user.mailbox
            key = request.query_params.get("folder", "inbox")
            folder = mailbox.folder(key)
            if folder is None or folder.well_known == "msgfolderroot":
                return self.not_found("There is no such folder in this mailbox.")
            page_raw = request.query_params.get("page", "1")
            page = int(page_raw) if page_raw.isdigit() and int(page_raw) > 0 else 1
            messages = [mailbox.messages[m] for m in folder.messages if m in mailbox.messages]
            messages.sort(key=lambda m: m.received, reverse=True)
            pages = max(1, math.ceil(len(messages) / PAGE_SIZE))
            page = min(page, pages)
            shown = messages[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
            rows = [
                {
                    "msg": m,
                    "sender": self._sender_label(m),
                    "chips": category_chips(mailbox, m.categories),
                }
                for m in shown
            ]
            return self.render(
                "mailbox.html",
                title=f"{folder.display_name} - {user.display_name}",
                tenant=tenant,
                user=user,
                tree=folder_tree(mailbox),
                current=folder,
                rows=rows,
                page=page,
                pages=pages,
                total=len(messages),
                unread=_unread(mailbox, folder),
            )

    async def message(self, request: Request) -> Response:
        with self.store.lock:
            found = self._message(request)
            if isinstance(found, HTMLResponse):
                return found
            tenant, user, msg = found
            mailbox = user.mailbox
            folder = mailbox.folders.get(msg.folder_id)
            base = _message_url(user, msg)
            srcdoc = None
            if msg.body_type == "html":
                srcdoc = self._srcdoc(msg, base, request)
            return self.render(
                "message.html",
                title=msg.subject or "(no subject)",
                tenant=tenant,
                user=user,
                tree=folder_tree(mailbox),
                current=folder,
                msg=msg,
                sender=msg.from_ or msg.sender,
                chips=category_chips(mailbox, msg.categories),
                attachments=[a for a in msg.attachments if not a.is_inline],
                inline=[a for a in msg.attachments if a.is_inline],
                base=base,
                srcdoc=srcdoc,
                master=sorted(
                    (c.display_name for c in mailbox.categories.values()), key=str.casefold
                ),
                folders=folder_choices(mailbox),
                notice=_NOTICES.get(request.query_params.get("done", "")),
            )

    async def change_categories(self, request: Request) -> Response:
        """``POST .../categories``: ``category`` checkboxes and ``other`` become the categories."""
        return await self._change(request, "categories")

    async def move(self, request: Request) -> Response:
        """``POST .../move``: to the folder ``folder`` (an id)."""
        return await self._change(request, "move")

    async def _change(self, request: Request, action: str) -> Response:
        """What the mailbox's owner does in Outlook, through the store as Graph would."""
        if not same_origin(request):
            return self.render(
                "error.html", 403, title="Refused", message="Cross-site form posts are refused."
            )
        form = await request.form()
        with self.store.lock:
            found = self._message(request)
            if isinstance(found, HTMLResponse):
                return found
            tenant, user, msg = found
            mailbox = user.mailbox
            if action == "categories":
                chosen = [str(v) for v in form.getlist("category")] + [str(form.get("other", ""))]
                names: list[str] = []
                for name in (" ".join(v.split()) for v in chosen):
                    if name and name.casefold() not in {n.casefold() for n in names}:
                        names.append(name)
                if len(names) > MAX_CATEGORIES or any(len(n) > MAX_CATEGORY_NAME for n in names):
                    return self.render(
                        "error.html",
                        400,
                        title="Too many categories",
                        message=f"At most {MAX_CATEGORIES} categories of at most "
                        f"{MAX_CATEGORY_NAME} characters each.",
                    )
                msg.categories = names
                self.store.update_message(tenant, mailbox, msg)
            else:
                destination = mailbox.folders.get(str(form.get("folder", "")))
                if destination is None or destination.id not in dict(folder_choices(mailbox)):
                    return self.not_found("There is no such folder in this mailbox.")
                if destination.id != msg.folder_id:
                    self.store.move_message(tenant, mailbox, msg, destination)
            base = _message_url(user, msg)
        return RedirectResponse(f"{base}?done={action}", status_code=303)

    def _srcdoc(self, msg: Message, base: str, request: Request) -> str:
        by_cid = {a.content_id.lower(): a for a in msg.attachments if a.content_id}

        def swap(match: re.Match[str]) -> str:
            attachment = by_cid.get(match.group(1).lower())
            if attachment is None:
                return match.group(0)
            return f"{base}/attachments/{quote(attachment.id, safe='=')}"

        body = _CID.sub(swap, msg.body_content)
        origin = f"{request.url.scheme}://{request.url.netloc}"
        policy = (
            f"default-src 'none'; img-src {origin} data:; style-src 'unsafe-inline'; font-src data:"
        )
        head = (
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
            '<meta name="referrer" content="no-referrer"><base target="_blank">'
            "<style>body{font-family:Segoe UI,Arial,sans-serif;font-size:14px;"
            "margin:12px;color:#201f1e}img{max-width:100%}</style>"
        )
        return head + body

    async def attachment(self, request: Request) -> Response:
        with self.store.lock:
            found = self._mailbox(request.path_params["key"])
            if found is None:
                return self.not_found("There is no such mailbox.")
            msg = found[1].mailbox.message(request.path_params["mid"])
            if msg is None:
                return self.not_found("There is no such message.")
            attachment = next(
                (a for a in msg.attachments if a.id == request.path_params["aid"]), None
            )
            if attachment is None:
                return self.not_found("There is no such attachment.")
            content_type = attachment.content_type.lower()
            name = attachment.name.replace('"', "").replace("\r", "").replace("\n", "")
            disposition = f"attachment; filename*=UTF-8''{quote(name, safe='')}"
            if content_type in _INLINE_IMAGE_TYPES:
                media = content_type
                disposition = "inline"
            else:
                media = "application/octet-stream"
            return Response(
                attachment.content,
                media_type=media,
                headers={
                    "Content-Disposition": disposition,
                    "X-Content-Type-Options": "nosniff",
                    "Content-Security-Policy": "default-src 'none'; sandbox",
                    "Cache-Control": "no-store",
                },
            )

    async def signin(self, request: Request) -> Response:
        """``/viewer/signin``: the control token, once, for a cookie (only when one is set)."""
        token = self.state.control_token
        if not token:
            return RedirectResponse("/viewer", status_code=303)
        if request.method == "GET":
            return self.render("signin.html", title="Sign in to the viewer")
        if not same_origin(request):
            return self.render(
                "error.html", 403, title="Refused", message="Cross-site form posts are refused."
            )
        form = await request.form()
        if not token_matches(token, str(form.get("token", ""))):
            return self.render(
                "signin.html", 401, title="Sign in to the viewer", message="Wrong token."
            )
        response = RedirectResponse("/viewer", status_code=303)
        response.set_cookie(
            VIEWER_COOKIE,
            viewer_cookie_value(token),
            path="/viewer",
            secure=True,
            httponly=True,
            samesite="strict",
        )
        return response

    def _mailbox_names(self) -> dict[str, str]:
        return {user.id: user.user_principal_name for _, user in self.store.iter_mailboxes()}

    async def outbound(self, request: Request) -> Response:
        with self.store.lock:
            names = self._mailbox_names()
            rows = list(reversed(self.store.outbound))
            return self.render("outbound.html", title="Outbound mail", rows=rows, names=names)

    async def deletions(self, request: Request) -> Response:
        with self.store.lock:
            names = self._mailbox_names()
            apps = {a.client_id: a.display_name for a in self.store.apps.values()}
            rows = []
            for d in reversed(self.store.deletions):
                found = self.store.user_by_id(d.mailbox_id)
                exists = found is not None and found[1].mailbox.message(d.message_id) is not None
                rows.append({"d": d, "exists": exists})
            return self.render(
                "deletions.html", title="Deletion audit", rows=rows, names=names, apps=apps
            )

    async def requests(self, request: Request) -> Response:
        with self.state.log_lock:
            records = list(self.state.request_log)[-500:]
        with self.store.lock:
            names = self._mailbox_names()
            apps = {a.client_id: a.display_name for a in self.store.apps.values()}
        return self.render(
            "requests.html",
            title="Graph requests",
            rows=list(reversed(records)),
            names=names,
            apps=apps,
        )


def build_routes(state: EmulatorState) -> list[BaseRoute]:
    viewer = Viewer(state)
    return [
        Route("/viewer", viewer.index, methods=["GET"]),
        Route("/viewer/", viewer.index, methods=["GET"]),
        Route("/viewer/signin", viewer.signin, methods=["GET", "POST"]),
        Route("/viewer/outbound", viewer.outbound, methods=["GET"]),
        Route("/viewer/deletions", viewer.deletions, methods=["GET"]),
        Route("/viewer/requests", viewer.requests, methods=["GET"]),
        Route("/viewer/mailboxes/{key}", viewer.mailbox, methods=["GET"]),
        Route("/viewer/mailboxes/{key}/messages/{mid}", viewer.message, methods=["GET"]),
        Route(
            "/viewer/mailboxes/{key}/messages/{mid}/categories",
            viewer.change_categories,
            methods=["POST"],
        ),
        Route("/viewer/mailboxes/{key}/messages/{mid}/move", viewer.move, methods=["POST"]),
        Route(
            "/viewer/mailboxes/{key}/messages/{mid}/attachments/{aid}",
            viewer.attachment,
            methods=["GET"],
        ),
        Mount("/viewer/static", app=StaticFiles(directory=str(STATIC_DIR)), name="viewer-static"),
    ]
