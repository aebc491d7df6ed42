"""The floor: a minimal aiohttp forwarding proxy that does no translation.

It accepts the same legacy destroy calls as the gateway, picks the id out of the path or query, sends
``DELETE /2/dm_events/{id}`` upstream with the caller's headers and body, and hands v2's status and body back
untouched. No authentication of its own, no store, no parsing of the answer: what any Python gateway built on
aiohttp pays at least for one legacy destroy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

UPSTREAM_KEY = web.AppKey("upstream", str)
SESSION_KEY = web.AppKey("session", aiohttp.ClientSession)

_NOT_FORWARDED = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "content-length", "trailer"}
)


def create_proxy_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM_KEY] = upstream.rstrip("/")
    app.router.add_post("/1.1/direct_messages/destroy.json", _by_query)
    app.router.add_post("/api/direct_messages/destroy/{id}.{fmt:xml|json}", _by_path)
    app.router.add_route("*", "/2/{tail:.*}", _as_is)
    app.cleanup_ctx.append(_session)
    return app


async def _session(app: web.Application) -> AsyncIterator[None]:
    app[SESSION_KEY] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    try:
        yield
    finally:
        await app[SESSION_KEY].close()


async def _by_query(request: web.Request) -> web.Response:
    return await _forward(request, "DELETE", f"/2/dm_events/{request.query.get('id', '')}")


async def _by_path(request: web.Request) -> web.Response:
    return await _forward(request, "DELETE", f"/2/dm_events/{request.match_info['id']}")


async def _as_is(request: web.Request) -> web.Response:
    return await _forward(request, request.method, request.raw_path)


async def _forward(request: web.Request, method: str, path: str) -> web.Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
    body = await request.read()
    async with request.app[SESSION_KEY].request(
        method, request.app[UPSTREAM_KEY] + path, headers=headers, data=body or None
    ) as upstream:
        payload = await upstream.read()
        return web.Response(status=upstream.status, body=payload, content_type=upstream.content_type)
