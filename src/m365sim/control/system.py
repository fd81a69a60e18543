"""The emulator as a whole: reset, a summary of its state, scenarios, and save / load.

``POST /_emulator/reset`` empties everything (store, logs, counters, throttling windows, fault
rules, and any extension with a ``reset()`` such as subscriptions). Scenarios load by name
(``demo``, ``blank``), as YAML text or as a JSON object (see docs/m365sim/scenarios.md).
Save / load write and read a JSON state file (:mod:`m365sim.persist`) by plain file name in
the emulator's data directory only, so the control API cannot be used to write elsewhere on the
machine; ``GET``/``POST /_emulator/snapshot`` carry the same document over HTTP instead.
"""

from __future__ import annotations

import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from m365sim import jsonbody
from m365sim.clock import iso
from m365sim.control.common import (
    ControlError,
    bad,
    check_keys,
    endpoint,
    not_found,
    ok,
    opt_bool,
    opt_str,
    parse_json,
    read_body,
    read_json,
)
from m365sim.control.directory import tenant_json
from m365sim.persist import StateFileError, load, restore, save, snapshot
from m365sim.scenario import apply_scenario, builtin_names, parse_text, read_scenario, reset_state
from m365sim.state import EmulatorState

_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_SNAPSHOT = 1024 * 1024 * 1024
MAX_SCENARIO = 64 * 1024 * 1024


def state_summary(state: EmulatorState) -> dict[str, object]:
    store = state.store
    with store.lock:
        mailboxes = [u for _, u in store.iter_mailboxes()]
        return {
            "baseUrl": state.base_url,
            "now": iso(store.clock.now()),
            "clockOffsetSeconds": store.clock.offset,
            "tenants": [tenant_json(t) for t in store.tenants.values()],
            "apps": len(store.apps),
            "mailboxes": len(mailboxes),
            "messages": sum(len(u.mailbox.messages) for u in mailboxes),
            "outbound": len(store.outbound),
            "deletions": len(store.deletions),
            "refreshTokens": len(store.refresh_tokens),
            "requestsLogged": len(state.request_log),
        }


def build_routes(state: EmulatorState) -> list[BaseRoute]:
    def state_file(name: str | None) -> tuple[str, Path]:
        if state.data_dir is None:
            raise bad("the emulator has no data directory; start it with --data-dir to save")
        name = name or "state.json"
        if not _FILE_NAME.match(name):
            raise bad("name must be a plain file name (letters, digits, '.', '_', '-')")
        return name, state.data_dir / name

    @endpoint
    async def reset(request: Request) -> Response:
        reset_state(state)
        return ok({"reset": True})

    @endpoint
    async def summary(request: Request) -> Response:
        return ok(state_summary(state))

    @endpoint
    async def scenarios(request: Request) -> Response:
        return ok({"value": builtin_names()})

    @endpoint
    async def scenario(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        reset_first = request.query_params.get("reset", "").lower() in ("1", "true", "yes")
        base_dir = None
        if content_type in ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"):
            raw = await read_body(request, MAX_SCENARIO)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise bad("the scenario must be UTF-8 text") from exc
            data = parse_text(text)
        else:
            spec = parse_json(await read_body(request, MAX_SCENARIO))
            check_keys(spec, {"name", "yaml", "scenario", "reset"}, "request")
            reset_first = reset_first or opt_bool(spec, "reset", "request")
            given = [k for k in ("name", "yaml", "scenario") if k in spec]
            if len(given) != 1:
                raise bad("give exactly one of name (a built-in scenario), yaml or scenario")
            if "name" in spec:
                name = opt_str(spec, "name", "request") or ""
                if "/" in name or "\\" in name or name not in builtin_names():
                    raise not_found(
                        f"no built-in scenario {name!r}; available: {', '.join(builtin_names())}"
                    )
                data, base_dir = read_scenario(name)
            elif "yaml" in spec:
                data = parse_text(opt_str(spec, "yaml", "request") or "")
            else:
                if not isinstance(spec["scenario"], dict):
                    raise bad("scenario must be an object")
                data = spec["scenario"]
        result = apply_scenario(state, data, base_dir=base_dir, reset=reset_first)
        return ok(result.to_json(), 201)

    @endpoint
    async def save_state(request: Request) -> Response:
        spec = await read_json(request, optional=True)
        check_keys(spec, {"name"}, "request")
        name, path = state_file(opt_str(spec, "name", "request"))
        size = save(state.store, path)
        return ok({"name": name, "path": str(path), "bytes": size})

    @endpoint
    async def load_state(request: Request) -> Response:
        spec = await read_json(request, optional=True)
        check_keys(spec, {"name"}, "request")
        name, path = state_file(opt_str(spec, "name", "request"))
        if not path.is_file():
            raise not_found(f"no saved state {name!r} in the data directory")
        try:
            load(state.store, path)
        except StateFileError as exc:
            raise bad(str(exc)) from exc
        return ok(state_summary(state))

    @endpoint
    async def snapshot_route(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(snapshot(state.store))
        raw = await read_body(request, MAX_SNAPSHOT)
        try:
            data = jsonbody.load(raw)
        except jsonbody.JsonBodyError as exc:
            raise bad(f"the snapshot is not valid JSON: {exc.message}") from exc
        try:
            restore(state.store, data)
        except StateFileError as exc:
            raise ControlError(400, str(exc)) from exc
        return ok(state_summary(state))

    return [
        Route("/_emulator/reset", reset, methods=["POST"]),
        Route("/_emulator/state", summary, methods=["GET"]),
        Route("/_emulator/scenarios", scenarios, methods=["GET"]),
        Route("/_emulator/scenario", scenario, methods=["POST"]),
        Route("/_emulator/save", save_state, methods=["POST"]),
        Route("/_emulator/load", load_state, methods=["POST"]),
        Route("/_emulator/snapshot", snapshot_route, methods=["GET", "POST"]),
    ]
