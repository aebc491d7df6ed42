"""The upstream client's own shortcuts, each against the straightforward way it replaces: URLs put together
from the parsed base, and bodies read in one go when their length is known and bounded; and the session that
serves every caller keeping no caller's cookies."""

from __future__ import annotations

import gzip
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from gateway.app import create_app
from gateway.auth.upstream import BearerCredential
from gateway.config import with_overrides
from gateway.emulator import EmulatorServer
from gateway.errors import UpstreamFailure, UpstreamUnavailable
from gateway.metrics import Metrics
from gateway.model import Principal
from gateway.upstream.client import UpstreamClient, _query_text
from tests.conftest import PLAIN_IDS, gateway_config

PRINCIPAL = Principal(BearerCredential("token"), "bearer", "bearer:test")
LIMIT = 1024


def client_for(base: str, session: Any = None, **options: Any) -> UpstreamClient:
    return UpstreamClient(session, base, **options)  # type: ignore[arg-type]


def parsed_whole(base: str, path: str, params: dict[str, str] | None) -> URL:
    """The URL of a call as it was always made: the whole string parsed, then the query set."""
    return URL(base.rstrip("/") + path).with_query(dict(params or {}))


# --- URLs ------------------------------------------------------------------------------------------------

BASES = st.one_of(
    st.sampled_from(
        [
            "https://api.x.com",
            "https://api.x.com/",
            "http://127.0.0.1:8080",
            "http://localhost:1/",
            "http://API.X.COM",
            "https://api.x.com:443",
            "http://[::1]:9000",
            "http://h/prefix",
            "http://h/prefix/",
            "http://h/a%20b",
            "http://h/.",
            "http://h?",
        ]
    ),
    st.builds(
        "http://{}:{}".format,
        st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True),
        st.integers(1, 65535),
    ),
)
SEGMENT = st.one_of(
    st.from_regex(r"[0-9]{1,19}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_~.-]{1,12}", fullmatch=True),
    st.text(min_size=0, max_size=12),
    st.text(min_size=1, max_size=12).map(lambda s: quote(s, safe="")),
)
PATHS = st.lists(SEGMENT, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts))
PARAMS = st.one_of(
    st.none(),
    st.just({}),
    st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=12), max_size=3),
)


@settings(max_examples=500, deadline=None)
@given(base=BASES, path=PATHS, params=PARAMS)
def test_a_url_is_the_one_parsing_the_whole_string_gives(base: str, path: str, params: dict[str, str] | None) -> None:
    try:
        expected = parsed_whole(base, path, params)
    except ValueError:
        return  # not a URL at all: nothing to compare
    url, target = client_for(base)._url(path, params)
    assert url == expected
    assert str(url) == str(expected) == target
    assert url.raw_path == expected.raw_path and url.raw_query_string == expected.raw_query_string


def test_plain_paths_on_a_bare_origin_take_the_shortcut(monkeypatch: pytest.MonkeyPatch) -> None:
    client = client_for("https://api.x.com")
    parsed: list[str] = []
    real_url = URL
    _query_text.cache_clear()

    def spy(value: Any, *args: Any, **kwargs: Any) -> URL:
        if not kwargs.get("encoded"):  # text taken as it is, already encoded, is not parsed for quoting
            parsed.append(value)
        return real_url(value, *args, **kwargs)

    monkeypatch.setattr("gateway.upstream.client.URL", spy)
    event = "/2/dm_events/1700000000000000005"
    assert [str(part) for part in client._url(event, None)] == ["https://api.x.com" + event] * 2
    query = {"ids": "1,2", "user.fields": "a b"}
    assert [str(part) for part in client._url("/2/users", query)] == [
        "https://api.x.com/2/users?ids=1,2&user.fields=a+b"
    ] * 2
    assert parsed == ["http://query.invalid/"]  # the query's text, encoded once...
    assert str(client._url("/2/users/1", dict(query))[0]) == "https://api.x.com/2/users/1?ids=1,2&user.fields=a+b"
    assert parsed == ["http://query.invalid/"]  # ...for every path it is asked with
    client._url("/2/users/by/username/a%20b", None)  # not plain: parsed whole
    assert parsed[1:] == ["https://api.x.com/2/users/by/username/a%20b"]


# --- bounded bodies --------------------------------------------------------------------------------------


def stub_app(body: bytes, headers: dict[str, str], *, chunked: bool = False) -> web.Application:
    async def delete(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=body, headers=headers)
        response = web.StreamResponse(headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 100):
            await response.write(body[start : start + 100])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_delete("/2/dm_events/{id}", delete)
    return app


async def delete_through(aiohttp_server: Any, app: web.Application, metrics: Metrics | None = None) -> Any:
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        client = client_for(f"http://{server.host}:{server.port}", session, max_response_bytes=LIMIT, observer=metrics)
        return await client.delete_dm_event("5", PRINCIPAL)


def deleted(padding: int) -> bytes:
    return b'{"data":{"deleted":true},"pad":"' + b"x" * padding + b'"}'


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize("padding", [0, LIMIT - len(deleted(0))], ids=["small", "at-the-limit"])
async def test_a_body_within_the_bound_is_read_whole(aiohttp_server: Any, chunked: bool, padding: int) -> None:
    response = await delete_through(aiohttp_server, stub_app(deleted(padding), JSON, chunked=chunked))
    assert response.body == {"data": {"deleted": True}, "pad": "x" * padding}


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_a_body_over_the_bound_is_refused(aiohttp_server: Any, chunked: bool) -> None:
    metrics = Metrics()
    body = deleted(LIMIT - len(deleted(0)) + 1)
    with pytest.raises(UpstreamFailure, match=f"exceeds {LIMIT} bytes"):
        await delete_through(aiohttp_server, stub_app(body, JSON, chunked=chunked), metrics)
    outcome = metrics.registry.get_sample_value(
        "dmgw_upstream_request_duration_seconds_count", {"endpoint": "DELETE /2/dm_events/:id", "outcome": "too_large"}
    )
    assert outcome == 1.0


async def test_a_small_compressed_body_that_inflates_past_the_bound_is_refused(aiohttp_server: Any) -> None:
    """Its Content-Length is well within the bound, but what it declares is not what reading it gives."""
    body = gzip.compress(deleted(50 * LIMIT))
    assert len(body) < LIMIT // 4
    app = stub_app(body, {**JSON, "Content-Encoding": "gzip"})
    with pytest.raises(UpstreamFailure, match=f"exceeds {LIMIT} bytes"):
        await delete_through(aiohttp_server, app)


async def test_a_compressed_body_within_the_bound_is_inflated(aiohttp_server: Any) -> None:
    app = stub_app(gzip.compress(deleted(100)), {**JSON, "Content-Encoding": "gzip"})
    response = await delete_through(aiohttp_server, app)
    assert response.body["pad"] == "x" * 100


async def test_a_body_cut_short_is_a_connection_error(aiohttp_server: Any) -> None:
    async def delete(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={**JSON, "Content-Length": "500"})
        await response.prepare(request)
        await response.write(b'{"data":')
        assert request.transport is not None
        request.transport.close()
        return response

    app = web.Application()
    app.router.add_delete("/2/dm_events/{id}", delete)
    with pytest.raises(UpstreamUnavailable, match="ClientPayloadError"):
        await delete_through(aiohttp_server, app)


# --- cookies ---------------------------------------------------------------------------------------------


async def test_a_cookie_v2_sets_for_one_caller_never_goes_up_with_the_next(
    aiohttp_client: Any, aiohttp_server: Any, emulator: EmulatorServer
) -> None:
    """One session serves every caller, so it keeps no cookies. (A host name, unlike an IP address, is one an
    ordinary cookie jar would keep them for.)"""
    seen: list[str | None] = []

    async def delete(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.json_response({"data": {"deleted": True}})
        response.set_cookie("guest_id", f"v1%3A{len(seen)}")
        return response

    stub = web.Application()
    stub.router.add_delete("/2/dm_events/{id}", delete)
    server = await aiohttp_server(stub)
    config = with_overrides(gateway_config(emulator), upstream={"base_url": f"http://localhost:{server.port}"})
    gateway = await aiohttp_client(create_app(config))
    for token, message_id in (("first-caller", PLAIN_IDS[0]), ("second-caller", PLAIN_IDS[1])):
        reply = await gateway.delete(
            f"/1.1/direct_messages/events/destroy.json?id={message_id}", headers={"Authorization": f"Bearer {token}"}
        )
        assert reply.status == 204
    assert seen == [None, None]
