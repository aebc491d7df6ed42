"""The emulator's OAuth 2.0 authorization-code flow with PKCE: X's consent page and the code grant.

The gateway's /connect pages are tested against these, so every refusal is checked to leave nothing
behind (no code issued, no token), and every flow ends with the issued token acting as the user.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from gateway.emulator import (
    EMULATOR_OAUTH2_CLIENT_ID,
    EMULATOR_OAUTH2_CLIENT_SECRET,
    EMULATOR_OAUTH2_PUBLIC_CLIENT_ID,
    OAUTH2_AUTHORIZE_PATH,
    TOKEN_PATH,
    EmulatorState,
)
from gateway.emulator.codes import AUTHORIZATION_CODE_LIFETIME
from tests.emulator_app import SkewedClock  # its fixtures come through tests/conftest.py

SEAN_ID = "38895958"
REDIRECT = "http://127.0.0.1:8080/connect/callback"
SCOPE = "dm.read dm.write users.read tweet.read offline.access"
BASIC = "Basic " + base64.b64encode(f"{EMULATOR_OAUTH2_CLIENT_ID}:{EMULATOR_OAUTH2_CLIENT_SECRET}".encode()).decode()
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def authorization(verifier: str, client_id: str = EMULATOR_OAUTH2_CLIENT_ID, **overrides: str) -> dict[str, str]:
    """The query of an authorization request, as a PKCE client builds it."""
    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": SCOPE,
        "state": "state-" + generate_token(16),
        "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
        **overrides,
    }


def answer(response: Any) -> dict[str, list[str]]:
    """The query the redirect carries back to the app, after checking it goes to the redirect URI."""
    assert response.status == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    return parse_qs(location.query)


async def approve(client: Any, query: dict[str, str], screen_name: str = "theSeanCook") -> Any:
    return await client.post(OAUTH2_AUTHORIZE_PATH, data={**query, "screen_name": screen_name}, allow_redirects=False)


async def code_for(client: Any, verifier: str, client_id: str = EMULATOR_OAUTH2_CLIENT_ID, **overrides: str) -> str:
    query = authorization(verifier, client_id, **overrides)
    back = answer(await approve(client, query))
    assert back["state"] == [query["state"]]
    return back["code"][0]


async def exchange(client: Any, code: str, verifier: str, *, headers: dict[str, str] | None = None, **form: str) -> Any:
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    auth = {"Authorization": BASIC} if headers is None else headers
    return await client.post(TOKEN_PATH, data={**body, **form}, headers={**FORM, **auth})


async def refused(response: Any, status: int, error: str) -> None:
    assert response.status == status, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert body["error"] == error and body["error_description"]
    assert set(body) == {"error", "error_description"}


# --- the flows ------------------------------------------------------------------------------------------


async def test_confidential_client_flow_issues_a_grant_that_acts_as_the_user(client: Any, state: EmulatorState) -> None:
    verifier = generate_token(64)
    query = authorization(verifier)
    page = await client.get(OAUTH2_AUTHORIZE_PATH, params=query)
    assert page.status == 200 and page.content_type == "text/html"
    text = await page.text()
    assert "Emulator DM Gateway" in text
    assert all(f"<code>{scope}</code>" in text for scope in SCOPE.split())
    assert f'<form method="post" action="{OAUTH2_AUTHORIZE_PATH}">' in text
    assert all(f'name="{name}" value="{value}"' in text for name, value in query.items())
    assert 'name="screen_name"' in text and ">Authorize app</button>" in text and ">Cancel</button>" in text

    back = answer(await approve(client, query))
    assert set(back) == {"state", "code"} and back["state"] == [query["state"]]
    response = await exchange(client, back["code"][0], verifier)
    assert response.status == 200, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    grant = await response.json()
    assert set(grant) == {"token_type", "expires_in", "access_token", "scope", "refresh_token"}
    assert grant["token_type"] == "bearer" and grant["expires_in"] == 7200 and grant["scope"] == SCOPE

    bearer = {"Authorization": f"Bearer {grant['access_token']}"}
    me = await client.get("/2/users/me", headers=bearer)
    assert me.status == 200 and (await me.json())["data"]["id"] == SEAN_ID
    events = await client.get("/2/dm_events", headers=bearer)
    assert events.status == 200 and (await events.json())["data"]
    renewed = await client.post(
        TOKEN_PATH,
        data={"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]},
        headers={**FORM, "Authorization": BASIC},
    )
    assert renewed.status == 200 and state.token_refreshes == 1
    renewed_bearer = {"Authorization": f"Bearer {(await renewed.json())['access_token']}"}
    me = await client.get("/2/users/me", headers=renewed_bearer)
    assert (await me.json())["data"]["id"] == SEAN_ID

    seen = [(request.method, request.path) for request in state.requests]
    assert seen[:3] == [("GET", OAUTH2_AUTHORIZE_PATH), ("POST", OAUTH2_AUTHORIZE_PATH), ("POST", TOKEN_PATH)]


async def test_public_client_names_itself_and_gets_no_refresh_token_without_offline_access(
    client: Any, state: EmulatorState
) -> None:
    verifier = generate_token(43)
    code = await code_for(client, verifier, EMULATOR_OAUTH2_PUBLIC_CLIENT_ID, scope="users.read tweet.read")
    response = await exchange(client, code, verifier, headers={}, client_id=EMULATOR_OAUTH2_PUBLIC_CLIENT_ID)
    assert response.status == 200, await response.text()
    grant = await response.json()
    assert "refresh_token" not in grant and grant["scope"] == "users.read tweet.read"
    me = await client.get("/2/users/me", headers={"Authorization": f"Bearer {grant['access_token']}"})
    assert (await me.json())["data"]["id"] == SEAN_ID
    assert state.oauth2.access[grant["access_token"]].client_id == EMULATOR_OAUTH2_PUBLIC_CLIENT_ID


async def test_cancel_redirects_with_access_denied_and_issues_nothing(client: Any, state: EmulatorState) -> None:
    query = authorization(generate_token(48))
    response = await client.post(
        OAUTH2_AUTHORIZE_PATH, data={**query, "screen_name": "theSeanCook", "cancel": "1"}, allow_redirects=False
    )
    assert answer(response) == {"error": ["access_denied"], "state": [query["state"]]}
    assert state.codes.pending == {}


# --- the token endpoint's refusals ----------------------------------------------------------------------


async def test_wrong_verifier_is_refused_and_spends_the_code(client: Any, state: EmulatorState) -> None:
    verifier = generate_token(48)
    code = await code_for(client, verifier)
    await refused(await exchange(client, code, generate_token(48)), 400, "invalid_grant")
    await refused(await exchange(client, code, verifier), 400, "invalid_grant")
    assert state.oauth2.refreshes == 0 and len(state.oauth2.access) == 1  # the seed's grant alone


async def test_a_code_works_once(client: Any) -> None:
    verifier = generate_token(48)
    code = await code_for(client, verifier)
    assert (await exchange(client, code, verifier)).status == 200
    await refused(await exchange(client, code, verifier), 400, "invalid_grant")


async def test_an_expired_code_is_refused(client: Any, clock: SkewedClock) -> None:
    verifier = generate_token(48)
    code = await code_for(client, verifier)
    clock.offset = AUTHORIZATION_CODE_LIFETIME + 1
    await refused(await exchange(client, code, verifier), 400, "invalid_grant")


async def test_the_redirect_uri_must_match_the_authorization_request(client: Any) -> None:
    verifier = generate_token(48)
    code = await code_for(client, verifier)
    other = "http://127.0.0.1:8081/connect/callback"
    await refused(await exchange(client, code, verifier, redirect_uri=other), 400, "invalid_grant")


async def test_a_code_is_bound_to_its_client(client: Any) -> None:
    verifier = generate_token(48)
    code = await code_for(client, verifier, EMULATOR_OAUTH2_PUBLIC_CLIENT_ID)
    await refused(await exchange(client, code, verifier), 400, "invalid_grant")


@pytest.mark.parametrize(
    ("headers", "form"),
    [
        ({}, {"client_id": EMULATOR_OAUTH2_CLIENT_ID}),  # a confidential client must present its secret
        ({"Authorization": "Basic " + base64.b64encode(b"emulator-oauth2-client:wrong").decode()}, {}),
        ({}, {"client_id": "nobody"}),
    ],
)
async def test_a_client_that_does_not_authenticate_gets_401_and_keeps_the_code(
    client: Any, headers: dict[str, str], form: dict[str, str]
) -> None:
    verifier = generate_token(48)
    code = await code_for(client, verifier)
    await refused(await exchange(client, code, verifier, headers=headers, **form), 401, "invalid_client")
    assert (await exchange(client, code, verifier)).status == 200


@pytest.mark.parametrize(
    "form",
    [
        {"code_verifier": "short"},
        {"code_verifier": "x" * 43 + " "},
        {"code_verifier": ""},
        {"redirect_uri": ""},
    ],
)
async def test_malformed_exchanges_get_invalid_request(client: Any, form: dict[str, str]) -> None:
    verifier = generate_token(48)
    code = await code_for(client, verifier)
    await refused(await exchange(client, code, verifier, **form), 400, "invalid_request")


# --- the consent page's refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"client_id": "nobody"},
        {"redirect_uri": "https://attacker.example/connect/callback"},
        {"redirect_uri": "http://127.0.0.1:8080/elsewhere"},
        {"redirect_uri": "http://127.0.0.1:8080/connect/callback#x"},
        {"redirect_uri": "http://127.0.0.1:8080/connect/../connect/callback"},
        {"redirect_uri": "http://127.0.0.1.attacker.example:8080/connect/callback"},
        {"redirect_uri": ""},
        {"client_id": "nobody", "redirect_uri": "https://attacker.example/"},
    ],
)
async def test_bad_client_or_redirect_uri_gets_a_page_never_a_redirect(
    client: Any, state: EmulatorState, overrides: dict[str, str]
) -> None:
    query = authorization(generate_token(48), **overrides)
    for response in (
        await client.get(OAUTH2_AUTHORIZE_PATH, params=query, allow_redirects=False),
        await approve(client, query),
        await client.post(OAUTH2_AUTHORIZE_PATH, data={**query, "cancel": "1"}, allow_redirects=False),
    ):
        assert response.status == 400 and response.content_type == "text/html"
        assert "Location" not in response.headers
        assert "attacker" not in await response.text()
    assert state.codes.pending == {}


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": ""}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"code_challenge": "too-short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": ""}, "invalid_scope"),
        ({"scope": "dm.read everything"}, "invalid_scope"),
    ],
)
async def test_other_faults_go_back_to_the_app_as_error_redirects(
    client: Any, state: EmulatorState, overrides: dict[str, str], error: str
) -> None:
    query = authorization(generate_token(48), **overrides)
    for response in (
        await client.get(OAUTH2_AUTHORIZE_PATH, params=query, allow_redirects=False),
        await approve(client, query),
    ):
        back = answer(response)
        assert back["error"] == [error] and back["state"] == [query["state"]] and "code" not in back
    assert state.codes.pending == {}


async def test_unknown_user_repeats_and_markup_are_refused_or_escaped(client: Any, state: EmulatorState) -> None:
    query = authorization(generate_token(48), state='"><script>alert(1)</script>')
    page = await client.get(OAUTH2_AUTHORIZE_PATH, params=query)
    text = await page.text()
    assert page.status == 200 and "<script>" not in text and "&lt;script&gt;" in text

    unknown = await approve(client, query, "nobody-by-that-name")
    assert unknown.status == 400 and unknown.content_type == "text/html" and "Location" not in unknown.headers

    repeated = f"{OAUTH2_AUTHORIZE_PATH}?client_id={EMULATOR_OAUTH2_CLIENT_ID}&client_id=nobody"
    response = await client.get(repeated, allow_redirects=False)
    assert response.status == 400 and "Location" not in response.headers

    not_a_form = await client.post(OAUTH2_AUTHORIZE_PATH, json=query, allow_redirects=False)
    assert not_a_form.status == 400 and "Location" not in not_a_form.headers
    assert state.codes.pending == {}
