"""The floors the gateway is measured against: two aiohttp proxies that do no translation.

The minimal proxy (``create_proxy_app``) accepts the same legacy destroy calls as the gateway, picks the id
out of the path or query, sends ``DELETE /2/dm_events/{id}`` upstream with the caller's headers and body, and
hands v2's status and body back untouched. No authentication of its own, no store, no parsing of the answer:
what any Python gateway built on aiohttp pays at least for one legacy destroy, one v2 call whatever the path.

The same-calls proxy (``create_same_calls_app``) makes, for each legacy call, the v2 calls the gateway makes
for it, signed as the gateway signs them: what a gateway on aiohttp pays at least on that path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from gateway.auth.upstream import OAuth1Credential
from gateway.service import V2_PAGE_SIZE
from gateway.upstream.client import DM_EVENT_LOOKUP, USER_FIELDS

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


# The same-calls proxy ------------------------------------------------------------------------------------


def create_same_calls_app(
    upstream: str, *, store_miss: bool = False, signer: OAuth1Credential | None = None
) -> web.Application:
    """A bare proxy that makes, for each legacy call the benchmark sends, the same v2 calls the gateway makes
    for it (the same methods, paths and queries, in the same order), and nothing else: no authentication of
    its own (the caller's ``Authorization`` goes upstream as it came), no store, no parsing or rendering. It
    answers with the last v2 answer's status and body as they came.

    With a ``signer``, each v2 call is signed with OAuth 1.0a as that consumer and token instead, as the
    gateway signs the calls it makes for an OAuth 1.0a caller: v2 (the emulator) then verifies the same
    signatures for both, so the comparison charges the gateway only for what it does on its side.

    - a destroy (v1.1 ``destroy.json?id=``, StatusNet ``destroy/ID.xml``): ``DELETE /2/dm_events/:id``, as
      the gateway does when its store holds the message; with ``store_miss``, first the
      ``GET /2/dm_events/:id`` with the expansions the gateway asks for when it does not;
    - an inbox list (v1.1 ``direct_messages.json``, StatusNet ``direct_messages.xml``): one v2 page of the
      caller's events, as the gateway reads it when that page holds the legacy page (the benchmark's inbox
      does; the gateway knows the caller's own user id after its first call);
    - a send (v1.1 ``direct_messages/new.json``, StatusNet ``direct_messages/new.xml`` to ``user_id``): the
      recipient's lookup, the send, and the read-back of the new event (the one JSON field it reads is the
      new event's id, which the read-back names).
    """
    app = web.Application()
    app[UPSTREAM_KEY] = upstream.rstrip("/")
    app[STORE_MISS_KEY] = store_miss
    app[SIGNER_KEY] = signer
    app.router.add_post("/1.1/direct_messages/destroy.json", _destroy_by_query)
    app.router.add_post("/api/direct_messages/destroy/{id}.{fmt:xml|json}", _destroy_by_path)
    app.router.add_get("/1.1/direct_messages.json", _list)
    app.router.add_get("/api/direct_messages.{fmt:xml|json}", _list)
    app.router.add_post("/1.1/direct_messages/new.json", _send)
    app.router.add_post("/api/direct_messages/new.{fmt:xml|json}", _send)
    app.cleanup_ctx.append(_session)
    return app


STORE_MISS_KEY = web.AppKey("store_miss", bool)
SIGNER_KEY: web.AppKey[OAuth1Credential | None] = web.AppKey("signer")
# What the gateway asks of v2 (gateway/upstream/client.py, gateway/service.py): kept from there, not copied.
_EVENT_QUERY = DM_EVENT_LOOKUP
_LIST_QUERY = {**DM_EVENT_LOOKUP, "event_types": "MessageCreate", "max_results": str(V2_PAGE_SIZE)}
_RECIPIENT_QUERY = {"user.fields": f"{USER_FIELDS},receives_your_dm"}


class _Upstream:
    """The v2 calls of one legacy request, with the caller's ``Authorization`` or each signed by the app's
    signer; ``status``, ``body`` and ``content_type`` are the last answer's."""

    def __init__(self, request: web.Request) -> None:
        self._session = request.app[SESSION_KEY]
        self._base = request.app[UPSTREAM_KEY]
        self._signer = request.app[SIGNER_KEY]
        authorization = request.headers.get("Authorization")
        self._headers = {"Authorization": authorization} if authorization else {}
        self.status = 502
        self.body = b""
        self.content_type = "application/json"

    async def call(
        self, method: str, path: str, query: dict[str, str] | None = None, json: dict[str, str] | None = None
    ) -> bytes:
        url = URL(self._base + path)
        if query:
            url = url.with_query(query)
        headers = self._headers
        if self._signer is not None:
            headers = {"Authorization": await self._signer.authorization(method, str(url))}
        async with self._session.request(method, url, headers=headers, json=json) as upstream:
            self.status, self.body, self.content_type = upstream.status, await upstream.read(), upstream.content_type
        return self.body

    def answer(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, content_type=self.content_type)


async def _destroy_by_query(request: web.Request) -> web.Response:
    return await _destroy(request, request.query.get("id", ""))


async def _destroy_by_path(request: web.Request) -> web.Response:
    return await _destroy(request, request.match_info["id"])


async def _destroy(request: web.Request, message_id: str) -> web.Response:
    v2 = _Upstream(request)
    if request.app[STORE_MISS_KEY]:
        await v2.call("GET", f"/2/dm_events/{message_id}", _EVENT_QUERY)
        if v2.status != 200:
            return v2.answer()
    await v2.call("DELETE", f"/2/dm_events/{message_id}")
    return v2.answer()


async def _list(request: web.Request) -> web.Response:
    v2 = _Upstream(request)
    await v2.call("GET", "/2/dm_events", _LIST_QUERY)
    return v2.answer()


async def _send(request: web.Request) -> web.Response:
    form = await request.post()
    recipient, text = str(form.get("user_id", "")), str(form.get("text", ""))
    v2 = _Upstream(request)
    await v2.call("GET", f"/2/users/{recipient}", _RECIPIENT_QUERY)
    if v2.status != 200:
        return v2.answer()
    sent = await v2.call("POST", f"/2/dm_conversations/with/{recipient}/messages", json={"text": text})
    if v2.status != 201:
        return v2.answer()
    event_id = orjson.loads(sent)["data"]["dm_event_id"]
    await v2.call("GET", f"/2/dm_events/{event_id}", _EVENT_QUERY)
    return v2.answer()
