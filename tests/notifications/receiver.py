"""A webhook receiver for tests: a real HTTP(S) server in a thread that records what Graph sends.

Each test gets its own :class:`Hook` (a unique path on the shared receiver) with scripted
behaviour: how to answer the validation handshake (echo the token, echo something else, answer
another status, answer late, answer JSON) and which statuses and delays to answer notification
POSTs with. Hooks record validation tokens and notification payloads; :meth:`Hook.wait_for`
blocks until enough have arrived.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

_ids = itertools.count(1)


@dataclass
class Hook:
    path: str
    url: str
    # validation behaviour: "echo" | "wrong" | "json"; status and delay apply to all modes
    validation: str = "echo"
    validation_status: int = 200
    validation_delay: float = 0.0
    # notification behaviour: statuses answered in order (then 202), delay before answering
    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    validations: list[str] = field(default_factory=list)
    validation_content_types: list[str] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)
    post_headers: list[dict[str, str]] = field(default_factory=list)
    post_queries: list[str] = field(default_factory=list)
    post_times: list[float] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def notifications(self) -> list[dict[str, Any]]:
        """Every notification received, flattened out of the POSTs' ``value`` arrays."""
        with self._cond:
            return [n for post in self.posts for n in post.get("value", [])]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` notifications arrived; return them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [n for post in self.posts for n in post.get("value", [])]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} notifications at {self.path}, got {len(found)}: {found}"
                    )
                self._cond.wait(remaining)

    def wait_posts(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.posts) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} POSTs, got {len(self.posts)}")
                self._cond.wait(remaining)
            return list(self.posts)

    def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Wait ``seconds`` and return what arrived (to assert that nothing more comes)."""
        time.sleep(seconds)
        return self.notifications()


class Receiver:
    """The shared server behind all hooks."""

    def __init__(self, *, certfile: Path | None = None, keyfile: Path | None = None) -> None:
        self.hooks: dict[str, Hook] = {}
        self.sock = socket.socket(socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.scheme = "https" if certfile else "http"
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST", "GET"])])
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ssl_certfile=str(certfile) if certfile else None,
            ssl_keyfile=str(keyfile) if keyfile else None,
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])),
            name="webhook-receiver",
            daemon=True,
        )

    def start(self) -> Receiver:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("receiver did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        self.sock.close()

    def hook(self, host: str = "127.0.0.1", query: str = "", **behaviour: Any) -> Hook:
        path = f"/hooks/{next(_ids)}"
        url = f"{self.scheme}://{host}:{self.port}{path}"
        if query:
            url += f"?{query}"
        made = Hook(path=path, url=url, **behaviour)
        self.hooks[path] = made
        return made

    async def _handle(self, request: Request) -> Response:
        hook = self.hooks.get(request.url.path)
        if hook is None:
            return PlainTextResponse("no such hook", status_code=404)
        token = request.query_params.get("validationToken")
        if token is not None:
            with hook._cond:
                hook.validations.append(token)
                hook.validation_content_types.append(request.headers.get("content-type", ""))
            if hook.validation_delay:
                await asyncio.sleep(hook.validation_delay)
            if hook.validation == "json":
                return JSONResponse(token, status_code=hook.validation_status)
            body = token if hook.validation == "echo" else token + "-tampered"
            return PlainTextResponse(body, status_code=hook.validation_status)
        payload = await request.json()
        with hook._cond:
            status = hook.statuses.pop(0) if hook.statuses else 202
        if hook.delay:
            await asyncio.sleep(hook.delay)
        with hook._cond:
            hook.answered.append(status)
            if 200 <= status < 300:
                hook.posts.append(payload)
                hook.post_headers.append(dict(request.headers))
                hook.post_queries.append(request.url.query)
                hook.post_times.append(time.monotonic())
            hook._cond.notify_all()
        return Response(status_code=status)
