"""A worker's shared HTTP client for Graph (``Runtime.shared_graph_http``): every sync on the
event loop uses it while it is open, closing a sync's Graph client leaves it open, it keeps
no cookie (it is shared by every tenant), and outside it each Graph client has its own."""

from __future__ import annotations

import asyncio

import httpx

from postroom.sync import engine
from postroom.sync.queue import make_runtime
from tests.postroom.conftest import Postroom


def test_syncs_share_one_client_that_keeps_no_cookie(postroom: Postroom) -> None:
    runtime = make_runtime(postroom.settings, postroom.database, postroom.app.state.box)

    async def main() -> None:
        assert runtime.graph_http() is None
        async with runtime.shared_graph_http() as shared:
            assert runtime.graph_http() is shared
            first = engine._graph(runtime, None)  # type: ignore[arg-type]
            second = engine._graph(runtime, None)  # type: ignore[arg-type]
            assert first._http is shared and second._http is shared
            await first.aclose()
            assert not shared.is_closed  # a sync's end leaves the pool to the next
            answer = httpx.Response(
                200,
                headers={"set-cookie": "tenant=contoso; Path=/"},
                request=httpx.Request("GET", "https://graph.test/v1.0/me"),
            )
            shared.cookies.extract_cookies(answer)
            assert list(shared.cookies.jar) == []
        assert shared.is_closed and runtime.graph_http() is None
        own = engine._graph(runtime, None)  # type: ignore[arg-type]
        assert own._http is not shared
        await own.aclose()

    asyncio.run(main())
