"""Scenario files: a whole Microsoft 365 organisation described in YAML (or JSON) and loaded
in one go: tenants, users (passwords, directory roles such as Global Administrator, MFA),
shared mailboxes with FullAccess, groups, app registrations, consents, application access
policies, folders, master categories and mail (written out, raw RFC 822, or generated from a seed).

The format is documented in docs/m365sim/scenarios.md; ``scenarios/demo.yaml`` and
``scenarios/blank.yaml`` ship with the emulator and are loaded by name.

Loading reuses the control API's builders (:mod:`m365sim.control.directory`,
:mod:`m365sim.control.mail`), so the same rules and error messages apply; every message says
where in the file the problem is (``tenants[0].users[2].password is required ...``).
:func:`apply_scenario` first loads the file into a scratch store (that is :func:`validate`)
and checks it against the running store for duplicate ids, domains, addresses and client ids,
so a bad scenario changes nothing. Times such as ``receivedDateTime: -2d3h`` are relative to
the moment of loading, so demo mail always looks recent; everything else, including generated
mail (``generate`` with a ``seed``), is deterministic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import yaml

from m365sim.config import EmulatorConfig
from m365sim.control.common import (
    ControlError,
    JsonDict,
    bad,
    check_keys,
    conflict,
    obj_list,
    opt_bool,
    opt_int,
    opt_str,
    parse_when,
    str_list,
)
from m365sim.control.directory import (
    SHARED_FIELDS,
    USER_FIELDS,
    create_app,
    create_group,
    create_policy,
    create_tenant,
    create_user,
    grant_consent,
    normalize_upn,
)
from m365sim.control.directory import (
    TENANT_FIELDS as DIRECTORY_TENANT_FIELDS,
)
from m365sim.control.mail import (
    add_category,
    build_from_mime,
    build_message,
    create_folder_path,
    message_draft,
    resolve_folder,
)
from m365sim.mime import MimeError, parse_rfc822
from m365sim.state import EmulatorState
from m365sim.store import Store, Tenant, User

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
TOP_FIELDS = {"name", "description", "seed", "config", "tenants", "apps"}
TENANT_FIELDS = {
    "id",
    "displayName",
    "domain",
    "userConsentAllowed",
    "users",
    "sharedMailboxes",
    "groups",
    "consents",
    "accessPolicies",
}
MAILBOX_FIELDS = {"folders", "categories", "messages", "generate"}
RAW_FIELDS = {"raw", "eml", "folder", "isRead", "categories", "receivedDateTime"}
GENERATE_FIELDS = {"count", "seed", "folder", "senders", "subjects", "start", "unreadRatio", "to"}
MAX_GENERATED = 200_000

_DEFAULT_SENDERS = [
    "Dana Swope <dana.swope@fabrikam.test>",
    "Pieter Smit <p.smit@vanderlinden-transport.test>",
    "Accounts Payable <ap@northwind.test>",
    "Sanne Visser <sanne@bloemenhandel-visser.test>",
    "Track & Trace <noreply@parcelpoint.test>",
    "Marco Rossi <marco.rossi@adventure-works.test>",
]
_DEFAULT_SUBJECTS = [
    "Order {n} confirmation",
    "Invoice {n}",
    "Where is my parcel? (order {n})",
    "Vraag over bestelling {n}",
    "Factuur {n} - herinnering",
    "Delivery update for shipment {n}",
]


@dataclass
class ScenarioResult:
    """What a scenario created, for the CLI banner and the control API's answer."""

    name: str
    description: str = ""
    tenants: list[JsonDict] = field(default_factory=list)
    users: list[JsonDict] = field(default_factory=list)
    apps: list[JsonDict] = field(default_factory=list)
    messages: int = 0
    config: JsonDict = field(default_factory=dict)

    def to_json(self) -> JsonDict:
        return {
            "name": self.name,
            "description": self.description,
            "tenants": self.tenants,
            "users": self.users,
            "apps": self.apps,
            "messages": self.messages,
            "config": self.config,
        }


# ------------------------------------------------------------------------------- reading
def parse_text(text: str, source: str = "scenario") -> JsonDict:
    """YAML (a superset of JSON) into a scenario object, with a clear error when it is not."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise bad(f"{source} is not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise bad(f"{source} must be a mapping with 'tenants' and 'apps' at the top level")
    return data


def builtin_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def read_scenario(name_or_path: str) -> tuple[JsonDict, Path | None]:
    """A built-in scenario by name (``demo``, ``blank``) or a file; returns (data, base dir)."""
    builtin = SCENARIO_DIR / f"{name_or_path}.yaml"
    if "/" not in name_or_path and "\\" not in name_or_path and builtin.is_file():
        return parse_text(builtin.read_text(encoding="utf-8"), builtin.name), SCENARIO_DIR
    path = Path(name_or_path)
    if not path.is_file():
        raise ControlError(
            404,
            f"no scenario {name_or_path!r}: not a built-in one ({', '.join(builtin_names())}) "
            "and no such file",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(f"cannot read {path}: {exc}") from exc
    return parse_text(text, str(path)), path.resolve().parent


# ------------------------------------------------------------------------------- loading
def _config(data: JsonDict) -> JsonDict:
    values = data.get("config") or {}
    if not isinstance(values, dict):
        raise bad("config must be a mapping of emulator settings")
    try:
        EmulatorConfig().update(values)
    except ValueError as exc:
        raise bad(f"config: {exc}") from exc
    return values


def _tenants(data: JsonDict) -> list[JsonDict]:
    return obj_list(data, "tenants")


def load_scenario(store: Store, data: JsonDict, *, base_dir: Path | None = None) -> ScenarioResult:
    """Build everything a scenario describes in ``store`` (no checks against existing data;
    use :func:`apply_scenario` for a running emulator)."""
    check_keys(data, TOP_FIELDS, "scenario")
    result = ScenarioResult(
        name=opt_str(data, "name", "scenario", "scenario") or "scenario",
        description=opt_str(data, "description", "scenario", "") or "",
        config=_config(data),
    )
    seed = opt_int(data, "seed", "scenario", 0)
    tenant_specs = _tenants(data)
    built: list[tuple[Tenant, JsonDict, str]] = []
    mailboxes: list[tuple[Tenant, User, JsonDict, str]] = []
    # 1. directory: tenants, users, shared mailboxes, groups
    for ti, spec in enumerate(tenant_specs):
        ctx = f"tenants[{ti}]"
        check_keys(spec, TENANT_FIELDS, ctx)
        directory = {k: v for k, v in spec.items() if k in DIRECTORY_TENANT_FIELDS}
        tenant = create_tenant(store, directory, ctx)
        built.append((tenant, spec, ctx))
        result.tenants.append(
            {"id": tenant.id, "displayName": tenant.display_name, "domain": tenant.domain}
        )
        for ui, user_spec in enumerate(obj_list(spec, "users", ctx)):
            uctx = f"{ctx}.users[{ui}]"
            check_keys(user_spec, USER_FIELDS | MAILBOX_FIELDS, uctx)
            directory = {k: v for k, v in user_spec.items() if k in USER_FIELDS}
            user = create_user(store, tenant, directory, uctx)
            mailboxes.append((tenant, user, user_spec, uctx))
            result.users.append(
                {
                    "userPrincipalName": user.user_principal_name,
                    "displayName": user.display_name,
                    "password": user.password,
                    "isAdmin": user.is_admin,
                    "directoryRoles": sorted(user.directory_roles),
                    "mfaRequired": user.mfa_required,
                    "tenantId": tenant.id,
                    "id": user.id,
                }
            )
        for si, shared_spec in enumerate(obj_list(spec, "sharedMailboxes", ctx)):
            sctx = f"{ctx}.sharedMailboxes[{si}]"
            check_keys(shared_spec, SHARED_FIELDS | MAILBOX_FIELDS, sctx)
            directory = {k: v for k, v in shared_spec.items() if k in SHARED_FIELDS}
            user = create_user(store, tenant, directory, sctx, shared=True)
            mailboxes.append((tenant, user, shared_spec, sctx))
        for gi, group_spec in enumerate(obj_list(spec, "groups", ctx)):
            create_group(store, tenant, group_spec, f"{ctx}.groups[{gi}]")
    # 2. app registrations
    for ai, app_spec in enumerate(obj_list(data, "apps")):
        app, secrets = create_app(store, app_spec, f"apps[{ai}]")
        result.apps.append(
            {
                "clientId": app.client_id,
                "displayName": app.display_name,
                "homeTenantId": app.home_tenant_id,
                "secrets": secrets,
                "redirectUris": list(app.redirect_uris),
            }
        )
    # 3. consents and access policies (they name apps)
    for tenant, spec, ctx in built:
        for ci, consent in enumerate(obj_list(spec, "consents", ctx)):
            grant_consent(store, tenant, consent, f"{ctx}.consents[{ci}]")
        for pi, policy in enumerate(obj_list(spec, "accessPolicies", ctx)):
            create_policy(store, tenant, policy, f"{ctx}.accessPolicies[{pi}]")
    # 4. mailbox content
    for index, (tenant, user, spec, ctx) in enumerate(mailboxes):
        result.messages += _fill_mailbox(store, tenant, user, spec, ctx, base_dir, seed + index)
    return result


def _fill_mailbox(
    store: Store,
    tenant: Tenant,
    user: User,
    spec: JsonDict,
    ctx: str,
    base_dir: Path | None,
    seed: int,
) -> int:
    mailbox = user.mailbox
    for fi, path in enumerate(str_list(spec, "folders", ctx)):
        create_folder_path(store, mailbox, path, f"{ctx}.folders[{fi}]")
    for ci, category in enumerate(obj_list(spec, "categories", ctx)):
        add_category(store, mailbox, category, f"{ctx}.categories[{ci}]")
    count = 0
    for mi, message in enumerate(obj_list(spec, "messages", ctx)):
        mctx = f"{ctx}.messages[{mi}]"
        if "raw" in message or "eml" in message:
            _deliver_raw(store, tenant, user, message, mctx, base_dir)
        else:
            draft = message_draft(store, message, mctx)
            folder = resolve_folder(store, mailbox, draft.folder_key, f"{mctx}.folder", create=True)
            store.insert_message(
                tenant, mailbox, build_message(store, mailbox, folder, draft, user)
            )
        count += 1
    generate = spec.get("generate")
    if generate is not None:
        if not isinstance(generate, dict):
            raise bad(f"{ctx}.generate must be a mapping (count, seed, folder, ...)")
        count += _generate(store, tenant, user, generate, f"{ctx}.generate", seed)
    return count


def _deliver_raw(
    store: Store,
    tenant: Tenant,
    user: User,
    spec: JsonDict,
    ctx: str,
    base_dir: Path | None,
) -> None:
    check_keys(spec, RAW_FIELDS, ctx)
    if "raw" in spec and "eml" in spec:
        raise bad(f"{ctx}: give raw or eml, not both")
    if "raw" in spec:
        text = spec["raw"]
        if not isinstance(text, str):
            raise bad(f"{ctx}.raw must be the message text")
        data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    else:
        if base_dir is None:  # sent over HTTP: never read the emulator's files for a caller
            raise bad(f"{ctx}.eml needs a scenario file on disk; send the message as raw instead")
        path = base_dir / (opt_str(spec, "eml", ctx) or "")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise bad(f"{ctx}.eml: cannot read {path}: {exc.strerror}") from exc
    try:
        parsed = parse_rfc822(data, max_bytes=64 * 1024 * 1024, max_header_bytes=256 * 1024)
    except MimeError as exc:
        raise bad(f"{ctx}: {exc.message}") from exc
    folder = resolve_folder(
        store, user.mailbox, opt_str(spec, "folder", ctx, "inbox") or "inbox", ctx, create=True
    )
    msg = build_from_mime(
        store,
        user.mailbox,
        folder,
        parsed,
        received_now=False,
        is_read=opt_bool(spec, "isRead", ctx),
        categories=str_list(spec, "categories", ctx),
    )
    if spec.get("receivedDateTime") is not None:
        msg.received = parse_when(spec["receivedDateTime"], store.clock, f"{ctx}.receivedDateTime")
        msg.created = msg.last_modified = msg.received
    store.insert_message(tenant, user.mailbox, msg)


def _generate(
    store: Store, tenant: Tenant, user: User, spec: JsonDict, ctx: str, default_seed: int
) -> int:
    check_keys(spec, GENERATE_FIELDS, ctx)
    count = opt_int(spec, "count", ctx, 0, minimum=0)
    if count > MAX_GENERATED:
        raise bad(f"{ctx}.count must be at most {MAX_GENERATED}")
    rng = random.Random(opt_int(spec, "seed", ctx, default_seed))
    senders = str_list(spec, "senders", ctx) or _DEFAULT_SENDERS
    subjects = str_list(spec, "subjects", ctx) or _DEFAULT_SUBJECTS
    start = parse_when(spec.get("start", "-30d"), store.clock, f"{ctx}.start")
    unread = spec.get("unreadRatio", 0.5)
    if isinstance(unread, bool) or not isinstance(unread, int | float) or not 0 <= unread <= 1:
        raise bad(f"{ctx}.unreadRatio must be a number between 0 and 1")
    folder = resolve_folder(
        store, user.mailbox, opt_str(spec, "folder", ctx, "inbox") or "inbox", ctx, create=True
    )
    span = max(1.0, (store.clock.now() - start).total_seconds())
    times = sorted(rng.uniform(0, span) for _ in range(count))
    for i in range(count):
        number = str(10_000 + rng.randrange(90_000))
        subject = rng.choice(subjects).replace("{n}", number)
        sender = rng.choice(senders)
        draft = message_draft(
            store,
            {
                "subject": subject,
                "from": sender,
                "body": f"{subject}\n\nThis message was generated by m365sim (seeded).",
                "isRead": rng.random() >= unread,
            },
            f"{ctx}[{i}]",
        )
        msg = build_message(
            store, user.mailbox, folder, draft, user, received=start + timedelta(seconds=times[i])
        )
        store.insert_message(tenant, user.mailbox, msg)
    return count


# ------------------------------------------------------------------------------- validation
def validate(data: JsonDict, *, base_dir: Path | None = None) -> ScenarioResult:
    """Load into a scratch store: raises ControlError with the first problem, else the summary."""
    return load_scenario(Store(), data, base_dir=base_dir)


def _check_against(store: Store, data: JsonDict) -> None:
    """Refuse (409) a scenario that would collide with what the running emulator holds."""
    for ti, spec in enumerate(_tenants(data)):
        ctx = f"tenants[{ti}]"
        tid = str(spec.get("id") or "").lower()
        if tid and tid in store.tenants:
            raise conflict(f"{ctx}: a tenant with id {tid} already exists (reset first?)")
        domain = str(spec.get("domain") or "").lower()
        if domain and store.tenant(domain) is not None:
            raise conflict(f"{ctx}: the domain {domain} already belongs to a tenant")
        fake = Tenant(id=tid or "-", display_name="", domain=domain)
        for kind in ("users", "sharedMailboxes"):
            for ui, user in enumerate(spec.get(kind) or []):
                if not isinstance(user, dict):
                    continue
                raw = str(user.get("userPrincipalName") or "")
                upn = normalize_upn(fake, raw, f"{ctx}.{kind}[{ui}]") if raw else ""
                if upn and store.find_user(upn) is not None:
                    raise conflict(f"{ctx}.{kind}[{ui}]: {upn} already exists")
                uid = str(user.get("id") or "").lower()
                if uid and store.user_by_id(uid) is not None:
                    raise conflict(f"{ctx}.{kind}[{ui}]: a user with id {uid} already exists")
    for ai, app in enumerate(data.get("apps") or []):
        if isinstance(app, dict):
            cid = str(app.get("clientId") or "").lower()
            if cid and cid in store.apps:
                raise conflict(f"apps[{ai}]: an app with client id {cid} already exists")


def apply_scenario(
    state: EmulatorState,
    data: JsonDict,
    *,
    base_dir: Path | None = None,
    reset: bool = False,
) -> ScenarioResult:
    """Validate, then load into the running emulator (optionally after a reset)."""
    validate(data, base_dir=base_dir)
    store = state.store
    with store.lock:
        if reset:
            reset_state(state)
        else:
            _check_against(store, data)
        result = load_scenario(store, data, base_dir=base_dir)
    if result.config:
        state.config.update(result.config)
    return result


def reset_state(state: EmulatorState) -> None:
    """Everything empty: the store, logs, counters, throttling, faults, and any extension
    (e.g. subscriptions) that offers a ``reset()`` method."""
    with state.store.lock:
        state.store.clear()
    with state.log_lock:
        state.request_log.clear()
        state.counters.clear()
    state.throttle.reset()
    state.faults.clear()
    for extension in list(state.extensions.values()):
        reset = getattr(extension, "reset", None)
        if callable(reset):
            reset()


__all__ = [
    "ScenarioResult",
    "apply_scenario",
    "builtin_names",
    "load_scenario",
    "parse_text",
    "read_scenario",
    "reset_state",
    "validate",
]
