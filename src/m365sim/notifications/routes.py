"""Control API for notifications, fault injection, throttling and configuration.

Not Microsoft's API: these routes under ``/_emulator/`` let tests and demos steer the emulator.
JSON in and out; bad input answers 400 ``{"error": "..."}``, unknown ids 404, never a 500.

* ``GET/POST/DELETE /_emulator/faults``, ``DELETE /_emulator/faults/{id}`` — Graph fault rules
  (:mod:`m365sim.graph.faults`); ``POST`` may carry ``"seed"`` to reseed the generator.
* ``GET/PATCH /_emulator/config`` — :class:`~m365sim.config.EmulatorConfig` (unknown names or
  wrong types: 400, nothing applied).
* ``POST /_emulator/throttle/reset`` — forget throttling windows and counts.
* ``GET/DELETE /_emulator/notifications`` — the delivery log (filters: ``subscription_id``,
  ``kind``, ``result``, ``limit``).
* ``GET /_emulator/subscriptions`` — every subscription with the emulator's bookkeeping
  (filters: ``tenant_id``, ``mailbox_id``).
* ``POST /_emulator/subscriptions/{id}/lifecycle`` ``{"event": ...}`` — send a lifecycle
  notification now; ``subscriptionRemoved`` also removes the subscription,
  ``reauthorizationRequired`` also starts the unanswered-challenge grace period.
* ``GET/PUT/DELETE /_emulator/notification-faults`` — drop/duplicate/delay/reorder faults for
  notification delivery.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from m365sim import jsonbody
from m365sim.config import EmulatorConfig
from m365sim.notifications.delivery import NotificationFaults, notifier_for
from m365sim.notifications.registry import LIFECYCLE_EVENTS, registry
from m365sim.state import EmulatorState


class BadInput(Exception):
    pass


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = jsonbody.load(raw)
    except jsonbody.JsonBodyError as exc:
        raise BadInput(f"the request body is not valid JSON: {exc.message}") from exc
    if not isinstance(data, dict):
        raise BadInput("the request body must be a JSON object")
    return data


def _limit(request: Request, default: int = 1000) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadInput("limit must be an integer") from exc
    if value < 1:
        raise BadInput("limit must be positive")
    return value


def build_routes(state: EmulatorState) -> list[BaseRoute]:
    async def guarded(request: Request, handler: Any) -> Response:
        try:
            response: Response = await handler(request)
            return response
        except BadInput as exc:
            return _error(400, str(exc))

    # ------------------------------------------------------------- faults
    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse({"value": [r.to_dict() for r in state.faults.rules()]})
        if request.method == "DELETE":
            removed = len(state.faults.rules())
            state.faults.clear()
            return JSONResponse({"removed": removed})
        spec = await _body(request)
        seed = spec.pop("seed", None)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise BadInput("seed must be an integer")
        try:
            rule = state.faults.add(spec)
        except ValueError as exc:
            raise BadInput(str(exc)) from exc
        if seed is not None:
            state.faults.seed(seed)
        return JSONResponse(rule.to_dict(), status_code=201)

    async def fault(request: Request) -> Response:
        rule_id = request.path_params["rule_id"]
        if not state.faults.remove(rule_id):
            return _error(404, f"no fault rule with id {rule_id!r}")
        return Response(status_code=204)

    # ------------------------------------------------------------- config, throttle
    async def config(request: Request) -> Response:
        if request.method == "PATCH":
            values = await _body(request)
            trial = EmulatorConfig(**state.config.to_dict())
            try:
                trial.update(values)
            except ValueError as exc:
                raise BadInput(str(exc)) from exc
            state.config.update(values)
        return JSONResponse(state.config.to_dict())

    async def throttle_reset(request: Request) -> Response:
        state.throttle.reset()
        return JSONResponse({"reset": True})

    # ------------------------------------------------------------- notifications
    async def notifications(request: Request) -> Response:
        notifier = notifier_for(state)
        if request.method == "DELETE":
            notifier.reset_log()
            return Response(status_code=204)
        entries = notifier.log_entries()
        for name in ("subscription_id", "kind", "result"):
            wanted = request.query_params.get(name)
            if wanted is not None:
                entries = [e for e in entries if e.get(name) == wanted]
        limit = _limit(request)
        return JSONResponse({"value": entries[-limit:]})

    async def subscriptions(request: Request) -> Response:
        tenant_id = request.query_params.get("tenant_id")
        mailbox_id = request.query_params.get("mailbox_id")
        with state.store.lock:
            subs = [
                s.to_dict()
                for s in registry(state).all()
                if (tenant_id is None or s.tenant_id == tenant_id)
                and (mailbox_id is None or s.mailbox_id == mailbox_id)
            ]
        return JSONResponse({"value": subs})

    async def lifecycle(request: Request) -> Response:
        sub_id = request.path_params["sub_id"]
        body = await _body(request)
        event = body.get("event")
        if event not in LIFECYCLE_EVENTS:
            raise BadInput(f"event must be one of {', '.join(LIFECYCLE_EVENTS)}")
        reg = registry(state)
        with state.store.lock:
            sub = reg.get(sub_id)
            if sub is None:
                return _error(404, f"no subscription with id {sub_id!r}")
            if event == "subscriptionRemoved":
                reg.remove(sub_id)
            elif event == "reauthorizationRequired" and sub.reauth_required_since is None:
                sub.reauth_required_since = state.clock.time()
        sent = notifier_for(state).send_lifecycle(sub, event)
        return JSONResponse(
            {"subscription_id": sub_id, "event": event, "sent": sent}, status_code=202
        )

    async def notification_faults(request: Request) -> Response:
        notifier = notifier_for(state)
        if request.method == "PUT":
            try:
                notifier.faults = NotificationFaults.from_spec(await _body(request))
            except ValueError as exc:
                raise BadInput(str(exc)) from exc
        elif request.method == "DELETE":
            notifier.faults = NotificationFaults()
        return JSONResponse(notifier.faults.to_dict())

    def endpoint(handler: Any) -> Any:
        async def run(request: Request) -> Response:
            return await guarded(request, handler)

        return run

    return [
        Route("/_emulator/faults", endpoint(faults), methods=["GET", "POST", "DELETE"]),
        Route("/_emulator/faults/{rule_id}", endpoint(fault), methods=["DELETE"]),
        Route("/_emulator/config", endpoint(config), methods=["GET", "PATCH"]),
        Route("/_emulator/throttle/reset", endpoint(throttle_reset), methods=["POST"]),
        Route("/_emulator/notifications", endpoint(notifications), methods=["GET", "DELETE"]),
        Route("/_emulator/subscriptions", endpoint(subscriptions), methods=["GET"]),
        Route(
            "/_emulator/subscriptions/{sub_id}/lifecycle",
            endpoint(lifecycle),
            methods=["POST"],
        ),
        Route(
            "/_emulator/notification-faults",
            endpoint(notification_faults),
            methods=["GET", "PUT", "DELETE"],
        ),
    ]
