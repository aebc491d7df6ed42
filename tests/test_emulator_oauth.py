"""The emulator's OAuth: 1.0a user-context signatures on /2, and OAuth 2.0 refresh with rotating tokens.

The gateway re-signs legacy calls and keeps v2 grants fresh; both are only tested if the emulator refuses
exactly what X refuses. Each refusal here is paired with a request that succeeds, so a test cannot pass
because everything is refused.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest
from authlib.oauth1 import ClientAuth
from authlib.oauth1.rfc5849 import client_auth
from authlib.oauth1.rfc5849.signature import sign_hmac_sha1

from gateway.emulator import TOKEN_PATH, EmulatorState, FaultRule, default_seed
from tests.emulator_app import SkewedClock  # its fixtures come through tests/conftest.py

CONSUMER, CONSUMER_SECRET = "emulator-consumer", "emulator-consumer-secret"
SEAN_TOKEN, SEAN_SECRET = "38895958-emulatortoken", "emulator-token-secret-sean"
MICK_TOKEN, MICK_SECRET = "776627022-emulatortoken", "emulator-token-secret-mick"
SEAN_ID, MICK_ID = "38895958", "776627022"
SECOND = "1583890000000000003"  # Sean -> Mick

CLIENT = "emulator-client"
ACCESS = "emulator-oauth2-access-theSeanCook"
REFRESH = "emulator-oauth2-refresh-theSeanCook"
SCOPE = "dm.read dm.write tweet.read users.read offline.access"
INVALID_TOKEN = {"error": "invalid_request", "error_description": "Value passed for the token was invalid."}


def oauth1(
    client: Any,
    method: str,
    path: str,
    *,
    consumer: str = CONSUMER,
    consumer_secret: str = CONSUMER_SECRET,
    token: str = SEAN_TOKEN,
    token_secret: str = SEAN_SECRET,
    body: str = "",
    **options: Any,
) -> dict[str, str]:
    """Headers signing ``method`` on the test server's ``path`` (with its query) as a real client does."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    auth = ClientAuth(consumer, consumer_secret, token, token_secret, **options)
    _, signed, _ = auth.sign(method, str(client.make_url(path)), headers, body)
    return signed


async def status_of(client: Any, method: str, path: str, headers: dict[str, str], data: str | None = None) -> int:
    return (await client.request(method, path, headers=headers, data=data)).status


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(login: str, password: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(login, password)}


async def refresh(client: Any, refresh_token: str = REFRESH, **extra: str) -> Any:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": CLIENT, **extra}
    return await client.post(TOKEN_PATH, data=form)


# --- OAuth 1.0a: what is accepted ------------------------------------------------------------------


async def test_signed_delete_acts_as_the_tokens_user(client: Any, state: EmulatorState) -> None:
    path = f"/2/dm_events/{SECOND}"
    response = await client.delete(path, headers=oauth1(client, "DELETE", path))
    assert response.status == 200, await response.text()
    assert await response.json() == {"data": {"deleted": True}}
    assert state.is_deleted_for(SECOND, SEAN_ID)
    assert not state.is_deleted_for(SECOND, MICK_ID)


async def test_signed_get_with_a_query_reads_as_the_tokens_user(client: Any) -> None:
    path = "/2/users/me?user.fields=location%2Ccreated_at"  # signed decoded, whatever the encoding
    headers = oauth1(client, "GET", path, token=MICK_TOKEN, token_secret=MICK_SECRET)
    response = await client.get(path, headers=headers)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["data"]["username"] == "s0c1alm3dia"
    assert body["data"]["location"] == "San Francisco, CA"
    assert body["data"]["created_at"] == "2012-08-23T19:45:07.000Z"


async def test_signed_requests_are_recorded_and_metered_per_oauth1_token(client: Any, state: EmulatorState) -> None:
    state.set_rate_limit("GET /2/users/me", 1)
    first = await client.get("/2/users/me", headers=oauth1(client, "GET", "/2/users/me"))
    assert (first.status, first.headers["x-rate-limit-remaining"]) == (200, "0")
    assert await status_of(client, "GET", "/2/users/me", oauth1(client, "GET", "/2/users/me")) == 429
    # Another credential of the same user has its own quota, as the bearer check already does.
    assert await status_of(client, "GET", "/2/users/me", bearer("emulator-token-theSeanCook")) == 200
    assert state.requests[0].headers["Authorization"].startswith("OAuth ")


async def test_form_body_parameters_are_signed_too(client: Any) -> None:
    path = f"/2/dm_events/{SECOND}"
    tampered = oauth1(client, "DELETE", path, body="reason=spam")
    assert await status_of(client, "DELETE", path, tampered, data="reason=ham") == 401
    intact = oauth1(client, "DELETE", path, body="reason=spam")
    assert await status_of(client, "DELETE", path, intact, data="reason=spam") == 200


# --- OAuth 1.0a: what is refused -------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrong",
    [
        {"consumer_secret": "not-the-consumer-secret"},
        {"token_secret": "not-the-token-secret"},
        {"token_secret": MICK_SECRET},  # another user's secret for Sean's token
        {"consumer": "unknown-consumer"},
        {"token": "unknown-token"},
        {"signature_method": "PLAINTEXT"},
    ],
)
async def test_bad_keys_or_method_get_401_problem(client: Any, wrong: dict[str, str]) -> None:
    response = await client.get("/2/users/me", headers=oauth1(client, "GET", "/2/users/me", **wrong))
    assert response.status == 401
    assert response.content_type == "application/problem+json"
    assert (await response.json(content_type=None))["title"] == "Unauthorized"
    assert await status_of(client, "GET", "/2/users/me", oauth1(client, "GET", "/2/users/me")) == 200


class _MislabellingAuth(ClientAuth):
    """Computes an HMAC-SHA1 signature but calls it HMAC-SHA256, to test that the label is checked too."""

    SIGNATURE_METHODS = {**ClientAuth.SIGNATURE_METHODS, "HMAC-SHA256": sign_hmac_sha1}  # noqa: RUF012 - Authlib's own


async def test_only_hmac_sha1_is_accepted_whatever_the_signature(client: Any) -> None:
    url = str(client.make_url("/2/users/me"))
    auth = _MislabellingAuth(CONSUMER, CONSUMER_SECRET, SEAN_TOKEN, SEAN_SECRET, signature_method="HMAC-SHA256")
    _, headers, _ = auth.sign("GET", url, {}, b"")
    assert 'oauth_signature_method="HMAC-SHA256"' in headers["Authorization"]
    assert await status_of(client, "GET", "/2/users/me", headers) == 401
    assert await status_of(client, "GET", "/2/users/me", oauth1(client, "GET", "/2/users/me")) == 200


async def test_a_token_presented_with_a_consumer_it_was_not_issued_to_gets_401(
    client: Any, state: EmulatorState
) -> None:
    state.oauth1.consumers["other-consumer"] = "other-secret"
    other = oauth1(client, "GET", "/2/users/me", consumer="other-consumer", consumer_secret="other-secret")
    assert await status_of(client, "GET", "/2/users/me", other) == 401
    assert await status_of(client, "GET", "/2/users/me", oauth1(client, "GET", "/2/users/me")) == 200


@pytest.mark.parametrize(
    ("signed_path", "sent_path"),
    [
        ("/2/dm_events?max_results=2", "/2/dm_events?max_results=3"),
        ("/2/dm_events?max_results=2", "/2/dm_events?max_results=2&event_types=MessageCreate"),
        ("/2/dm_events?max_results=2", "/2/dm_events"),
        ("/2/users?ids=1", "/2/users?ids=38895958"),
    ],
)
async def test_a_request_changed_after_signing_gets_401(client: Any, signed_path: str, sent_path: str) -> None:
    assert await status_of(client, "GET", sent_path, oauth1(client, "GET", signed_path)) == 401
    assert await status_of(client, "GET", sent_path, oauth1(client, "GET", sent_path)) == 200


async def test_a_signature_for_another_host_gets_401(client: Any) -> None:
    headers = oauth1(client, "GET", "/2/users/me")
    assert await status_of(client, "GET", "/2/users/me", {**headers, "Host": "api.x.com"}) == 401
    assert await status_of(client, "GET", "/2/users/me", oauth1(client, "GET", "/2/users/me")) == 200


@pytest.mark.parametrize(("offset", "status"), [(-400, 401), (-250, 200), (250, 200), (400, 401)])
async def test_timestamps_more_than_five_minutes_off_get_401(
    client: Any, clock: SkewedClock, offset: float, status: int
) -> None:
    # A positive offset puts the emulator ahead, so the request looks stale; a negative one, from the future.
    clock.offset = offset
    assert await status_of(client, "GET", "/2/users/me", oauth1(client, "GET", "/2/users/me")) == status


async def test_a_replayed_nonce_gets_401_for_that_token_only(client: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(client_auth, "generate_nonce", lambda: "the-same-nonce")
    assert await status_of(client, "GET", "/2/users/me", oauth1(client, "GET", "/2/users/me")) == 200
    # A fresh signature does not help: the nonce is spent for this token, whatever else changed.
    assert await status_of(client, "GET", "/2/users?ids=1", oauth1(client, "GET", "/2/users?ids=1")) == 401
    mick = oauth1(client, "GET", "/2/users/me", token=MICK_TOKEN, token_secret=MICK_SECRET)
    assert await status_of(client, "GET", "/2/users/me", mick) == 200


async def test_the_exact_same_request_cannot_be_replayed(client: Any) -> None:
    headers = oauth1(client, "GET", "/2/users/me")
    assert [await status_of(client, "GET", "/2/users/me", headers) for _ in range(2)] == [200, 401]


async def test_a_refused_signature_does_not_spend_the_nonce(client: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(client_auth, "generate_nonce", lambda: "guessed-nonce")
    forged = oauth1(client, "GET", "/2/users/me", token_secret="forger-guess")
    assert await status_of(client, "GET", "/2/users/me", forged) == 401
    assert await status_of(client, "GET", "/2/users/me", oauth1(client, "GET", "/2/users/me")) == 200


async def test_nonces_are_forgotten_once_their_timestamps_are_stale(
    client: Any, clock: SkewedClock, monkeypatch: Any
) -> None:
    monkeypatch.setattr(client_auth, "generate_nonce", lambda: "recycled-nonce")
    assert await status_of(client, "GET", "/2/users/me", oauth1(client, "GET", "/2/users/me")) == 200
    later = int(time.time()) + 1000
    monkeypatch.setattr(client_auth, "generate_timestamp", lambda: str(later))
    clock.offset = 1000
    assert await status_of(client, "GET", "/2/users/me", oauth1(client, "GET", "/2/users/me")) == 200
    assert await status_of(client, "GET", "/2/users/me", oauth1(client, "GET", "/2/users/me")) == 401


@pytest.mark.parametrize(
    "authorization",
    [
        "OAuth",
        "OAuth garbage",
        'OAuth oauth_consumer_key="emulator-consumer", oauth_token="38895958-emulatortoken"',
        'OAuth oauth_token="a", oauth_token="b"',
    ],
)
async def test_malformed_or_incomplete_oauth_headers_get_401(client: Any, authorization: str) -> None:
    assert await status_of(client, "GET", "/2/users/me", {"Authorization": authorization}) == 401


async def test_token_of_a_vanished_account_gets_401(client: Any, state: EmulatorState) -> None:
    headers = oauth1(client, "GET", "/2/users/me")
    del state.users[SEAN_ID]
    assert await status_of(client, "GET", "/2/users/me", headers) == 401


async def test_reset_forgets_spent_nonces(client: Any, state: EmulatorState) -> None:
    headers = oauth1(client, "GET", "/2/users/me")
    assert await status_of(client, "GET", "/2/users/me", headers) == 200
    assert await status_of(client, "GET", "/2/users/me", headers) == 401
    state.reset()
    assert await status_of(client, "GET", "/2/users/me", headers) == 200


# --- OAuth 2.0 refresh -----------------------------------------------------------------------------


async def test_refresh_issues_a_new_pair_for_the_same_user(client: Any, state: EmulatorState) -> None:
    response = await refresh(client)
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert not any(name.startswith("x-rate-limit") for name in response.headers)  # X does not meter it
    body = await response.json()
    assert set(body) == {"token_type", "expires_in", "access_token", "scope", "refresh_token"}
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("bearer", 7200, SCOPE)
    assert body["access_token"] != ACCESS and body["refresh_token"] != REFRESH
    assert state.token_refreshes == 1
    assert state.valid_refresh_tokens() == {body["refresh_token"]}

    me = await client.get("/2/users/me", headers=bearer(body["access_token"]))
    assert me.status == 200
    assert (await me.json())["data"]["id"] == SEAN_ID


async def test_a_refresh_token_works_once(client: Any, state: EmulatorState) -> None:
    first = await (await refresh(client)).json()
    again = await refresh(client)
    assert again.status == 400
    assert again.content_type == "application/json"
    assert await again.json() == INVALID_TOKEN
    # The chain goes on from the newest refresh token.
    second = await refresh(client, first["refresh_token"])
    assert second.status == 200
    assert state.token_refreshes == 2
    assert (await refresh(client, first["refresh_token"])).status == 400


async def test_the_replaced_access_token_lives_until_it_expires(client: Any, state: EmulatorState) -> None:
    assert (await refresh(client)).status == 200
    assert (await client.get("/2/users/me", headers=bearer(ACCESS))).status == 200
    state.expire_access_token(ACCESS)
    response = await client.get("/2/users/me", headers=bearer(ACCESS))
    assert response.status == 401
    assert response.content_type == "application/problem+json"


async def test_refreshed_access_tokens_expire_after_two_hours(client: Any, clock: SkewedClock) -> None:
    access_token = (await (await refresh(client)).json())["access_token"]
    clock.offset = 7199
    assert (await client.get("/2/users/me", headers=bearer(access_token))).status == 200
    clock.offset = 7201
    assert (await client.get("/2/users/me", headers=bearer(access_token))).status == 401


def test_only_oauth2_access_tokens_can_be_expired(state: EmulatorState) -> None:
    with pytest.raises(KeyError):
        state.expire_access_token("emulator-token-theSeanCook")
    with pytest.raises(KeyError):
        state.expire_access_token("no-such-token")


async def test_a_refresh_keeps_the_quota_of_the_grant(client: Any, state: EmulatorState) -> None:
    state.set_rate_limit("GET /2/users/me", 1)
    assert (await client.get("/2/users/me", headers=bearer(ACCESS))).status == 200
    access_token = (await (await refresh(client)).json())["access_token"]
    assert (await client.get("/2/users/me", headers=bearer(access_token))).status == 429
    assert (await client.get("/2/users/me", headers=bearer("emulator-token-theSeanCook"))).status == 200


async def test_unknown_client_gets_401_and_the_token_stays_valid(client: Any, state: EmulatorState) -> None:
    response = await refresh(client, client_id="someone-else")
    assert response.status == 401
    assert (await response.json())["error"] == "unauthorized_client"
    assert state.valid_refresh_tokens() == {REFRESH}
    assert (await refresh(client)).status == 200


async def test_another_clients_refresh_token_is_invalid_for_it(client: Any, state: EmulatorState) -> None:
    state.oauth2.clients["other-client"] = None
    response = await refresh(client, client_id="other-client")
    assert (response.status, await response.json()) == (400, INVALID_TOKEN)
    assert (await refresh(client)).status == 200


async def test_a_client_with_a_secret_must_present_it_with_basic(client: Any, state: EmulatorState) -> None:
    state.oauth2.clients[CLIENT] = "client-secret"
    form = {"grant_type": "refresh_token", "refresh_token": REFRESH}
    right, wrong = basic(CLIENT, "client-secret"), basic(CLIENT, "wrong-secret")
    refusals = [
        await client.post(TOKEN_PATH, data={**form, "client_id": CLIENT}),
        await client.post(TOKEN_PATH, data=form, headers=wrong),
        await client.post(TOKEN_PATH, data={**form, "client_id": "x"}, headers=right),
        await client.post(TOKEN_PATH, data=form, headers={"Authorization": "Basic !!!"}),
        await client.post(TOKEN_PATH, data=form, headers={"Authorization": "Basic bm8tY29sb24="}),
    ]
    assert [response.status for response in refusals] == [401] * 5
    assert {(await response.json())["error"] for response in refusals} == {"unauthorized_client"}
    assert state.valid_refresh_tokens() == {REFRESH}
    accepted = await client.post(TOKEN_PATH, data={**form, "client_id": CLIENT}, headers=right)
    assert accepted.status == 200
    renewed = {**form, "refresh_token": (await accepted.json())["refresh_token"]}
    assert (await client.post(TOKEN_PATH, data=renewed, headers=right)).status == 200


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"refresh_token": REFRESH, "client_id": CLIENT}, "invalid_request"),
        ({"grant_type": "password", "username": "x", "client_id": CLIENT}, "unsupported_grant_type"),
        ({"grant_type": "refresh_token", "client_id": CLIENT}, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": REFRESH}, "invalid_request"),
        ("grant_type=refresh_token&refresh_token=a&refresh_token=b&client_id=" + CLIENT, "invalid_request"),
    ],
)
async def test_malformed_token_requests_get_400(client: Any, state: EmulatorState, form: Any, error: str) -> None:
    response = await client.post(TOKEN_PATH, data=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 400
    assert (await response.json())["error"] == error
    assert state.token_refreshes == 0
    assert (await refresh(client)).status == 200


async def test_a_json_body_is_refused(client: Any) -> None:
    response = await client.post(
        TOKEN_PATH, json={"grant_type": "refresh_token", "refresh_token": REFRESH, "client_id": CLIENT}
    )
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_request"


async def test_the_token_endpoint_only_takes_post(client: Any) -> None:
    response = await client.get(TOKEN_PATH)
    assert response.status == 405
    assert response.headers["Allow"] == "POST"


async def test_faults_apply_to_the_token_endpoint(client: Any, state: EmulatorState) -> None:
    state.faults.append(FaultRule(method="POST", path=TOKEN_PATH, status=503, times=1))
    failed = await refresh(client)
    assert failed.status == 503
    assert failed.content_type == "application/problem+json"
    assert state.token_refreshes == 0
    assert state.valid_refresh_tokens() == {REFRESH}
    assert (await refresh(client)).status == 200
    assert [(seen.method, seen.path) for seen in state.requests] == [("POST", "/2/oauth2/token")] * 2


async def test_reset_restores_the_seed_grants(client: Any, state: EmulatorState) -> None:
    access_token = (await (await refresh(client)).json())["access_token"]
    state.expire_access_token(ACCESS)
    state.reset()
    assert state.token_refreshes == 0
    assert state.valid_refresh_tokens() == {REFRESH}
    assert (await client.get("/2/users/me", headers=bearer(access_token))).status == 401
    assert (await client.get("/2/users/me", headers=bearer(ACCESS))).status == 200


# --- seed checks -----------------------------------------------------------------------------------


_TOKEN = {"secret": "s", "consumer": "c", "user_id": "1"}
_GRANT = {"access_token": "a", "user_id": "1", "client_id": "c"}


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("oauth1", {"consumers": {"x": "s"}, "tokens": {"t": _TOKEN}}, "unknown consumer"),
        ("oauth1", {"tokens": {"t": {"secret": "s"}}}, "lacks consumer, user_id"),
        ("oauth1", {"consumers": {"c": 5}}, "consumers"),
        ("oauth1", [], "must be an object"),
        ("oauth2", {"clients": {"c": None}, "grants": [{**_GRANT, "client_id": "x"}]}, "unknown client"),
        ("oauth2", {"clients": {"c": None}, "grants": [{**_GRANT, "expires_at": "soon"}]}, "expires_at"),
        ("oauth2", {"clients": {"c": None}, "grants": [_GRANT, _GRANT]}, "repeats"),
        ("oauth2", {"clients": {"c": None}, "grants": [{**_GRANT, "refresh_token": 7}]}, "refresh_token"),
        ("oauth2", {"clients": {"c": 5}}, "clients"),
    ],
)
def test_malformed_credential_seeds_are_refused(section: str, value: Any, message: str) -> None:
    seed = default_seed()
    seed[section] = value
    with pytest.raises(ValueError, match=message):
        EmulatorState.from_seed(seed)


def test_a_seed_without_credential_sections_still_loads() -> None:
    seed = default_seed()
    del seed["oauth1"], seed["oauth2"]
    state = EmulatorState.from_seed(seed)
    assert state.oauth1.tokens == {} and state.valid_refresh_tokens() == frozenset()


def test_the_default_seed_grant_has_a_seeded_expiry_and_scope() -> None:
    grant = EmulatorState.from_seed(default_seed()).oauth2.access[ACCESS]
    assert (grant.user_id, grant.client_id, grant.expires_at, grant.scope) == (SEAN_ID, CLIENT, None, SCOPE)
