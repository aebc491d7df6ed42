"""Hypothesis against the login endpoints (gateway/oauth_provider.py), over raw HTTP, with the hostile parts
tests/test_fuzz_http.py draws for the legacy routes, plus the login's own parameters (callbacks, verifiers,
xAuth fields, access types) and OAuth 1.0a plans signed with no token, a wrong one or the right one.

Whatever arrives: an answer below 500, no traceback or ERROR in the log, JSON that parses, every error in the
path's dialect, and X asked only for a login call that was signed right (never for anything under another
path than X's own login endpoints and ``/2/``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.auth.credentials import Consumer
from gateway.emulator import APP_CONSUMER_KEY, APP_CONSUMER_SECRET, EmulatorServer
from tests.conftest import GatewayFactory, store_of
from tests.test_fuzz_http import (
    CONSUMER,
    SETTINGS,
    Body,
    Call,
    Credential,
    Fuzzed,
    OAuthPlan,
    _fuzzed,
    bodies,
    check_error_shape,
    credentials,
    dialect_of,
    exchange,
    extra_headers,
    headers_for_any_path,
    start_example,
    values,
)

LEGACY = Consumer("legacy-fuzz-consumer", "legacy-fuzz-secret", via_upstream_app=True)
LOGIN_PATHS = [
    ("/oauth/request_token", ["POST", "GET"]),
    ("/oauth/access_token", ["POST", "GET"]),
    ("/oauth/authorize", ["GET"]),
    ("/oauth/authenticate", ["GET"]),
    ("/oauth/callback", ["GET"]),
    ("/api/oauth/request_token", ["POST", "GET"]),
    ("/api/oauth/access_token", ["POST", "GET"]),
    ("/1/oauth/authorize", ["GET"]),
    ("/1.1/oauth/invalidate_token", ["POST"]),
]
X_LOGIN_PATHS = {"/oauth/request_token", "/oauth/access_token", "/1.1/oauth/invalidate_token"}
LOGIN_NAMES = (
    "oauth_token", "oauth_verifier", "oauth_callback", "x_auth_mode", "x_auth_username", "x_auth_password",
    "x_auth_access_type", "request", "denied", "screen_name", "force_login",
)  # fmt: skip
login_values = st.one_of(
    values,
    st.sampled_from(
        ["oob", "client_auth", "read", "write", "admin", "sean", "marcos", "correct horse battery staple",
         "https://client.example/cb?x=1", "javascript:alert(1)", "http://[::1", "https://a\r\nb", "x" * 3000]
    ),
)  # fmt: skip
login_params = st.lists(st.tuples(st.sampled_from(LOGIN_NAMES), login_values), max_size=4)
# Signed with no token (request token, xAuth), or with the login's own oauth_* values changed.
login_plans = st.builds(
    OAuthPlan,
    where=st.sampled_from(["header", "query", "form"]),
    signature=st.none() | st.text(max_size=20),
    overrides=st.lists(
        st.tuples(st.sampled_from(["oauth_token", "oauth_callback", "oauth_verifier"]), login_values), max_size=2
    ).map(lambda pairs: (("oauth_token", ""), *pairs)),
    secrets=st.sampled_from([(CONSUMER.secret, ""), (CONSUMER.secret, "x")]),
).map(lambda plan: Credential(oauth=plan))


@st.composite
def login_calls(draw: st.DrawFn) -> Call:
    path, methods = draw(st.sampled_from(LOGIN_PATHS))
    method = draw(st.sampled_from(methods) | st.sampled_from(["GET", "POST", "DELETE", "HEAD"]))
    body = draw(bodies | login_params.map(lambda p: Body().with_form(p)))
    return Call(
        method=method,
        path=path,
        query=tuple(draw(login_params)),
        body=body,
        credential=draw(st.booleans().flatmap(lambda login: login_plans if login else credentials)),
        # aiohttp answers an odd Expect on a method no route takes before the gateway sees the call.
        headers=tuple(draw(extra_headers if method in methods else headers_for_any_path)),
    )


@pytest.fixture
async def fuzzed(make_gateway: GatewayFactory, emulator: EmulatorServer, tmp_path: Any) -> AsyncIterator[Fuzzed]:
    """The fuzzing gateway, with the operator's app configured and a consumer that acts through it."""
    upstream = {"oauth1_consumer_key": APP_CONSUMER_KEY, "oauth1_consumer_secret": APP_CONSUMER_SECRET}
    async for value in _fuzzed(
        make_gateway, emulator, store_url=f"sqlite:///{tmp_path}/fuzz.sqlite3", upstream=upstream
    ):
        await store_of(value.client).put_consumer(LEGACY)
        yield value


def _signed_right(call: Call) -> bool:
    return call.credential.oauth is not None and call.credential.oauth.signature is None


@SETTINGS
@example(call=Call("POST", "/oauth/request_token", (), Body(), Credential(), headers=(("Expect", "gzip"),)))
@given(call=login_calls())
async def test_any_call_to_a_login_endpoint(fuzzed: Fuzzed, call: Call) -> None:
    await start_example(fuzzed)
    reply = await exchange(fuzzed.port, call.wire(fuzzed.host), call.method)
    problems = [r for r in fuzzed.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not problems, "\n".join(f"{r.name} {r.levelname}: {r.getMessage()}" for r in problems)
    asked = [r.path for r in fuzzed.emulator.state.requests]
    if _signed_right(call):
        assert all(p in X_LOGIN_PATHS or p.startswith("/2/") for p in asked), asked
    else:
        assert asked == [], asked  # a refusal sends nothing upstream
    assert reply is not None, "no answer at all"
    assert reply.status < 500, (reply.status, reply.body[:500])
    assert reply.headers.get("x-request-id"), reply.headers
    if reply.body and "json" in reply.headers.get("content-type", ""):
        json.loads(reply.body)
    if reply.status >= 400 and call.method != "HEAD":
        check_error_shape(reply, dialect_of(unquote(call.path)))
