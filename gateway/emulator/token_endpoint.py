"""``POST /2/oauth2/token``: a user's OAuth 2.0 grant, from an authorization code or a refresh token.

This is the one /2 route a caller reaches without a user credential: the client identifies itself (form
``client_id``, or HTTP Basic ``client_id:client_secret`` for a client with a secret) and the code or the
refresh token says whose grant to issue or renew. ``authorization_code`` exchanges a code from the
consent page (``consent.py``) once, before it expires, for the same client and ``redirect_uri``, and only
with the PKCE ``code_verifier`` whose S256 digest is the code's challenge. Errors are OAuth 2.0's
``{"error", "error_description"}`` JSON, not problem+json, because that is what X's token endpoint
answers and what a client must parse. A client that fails to authenticate gets X's
``unauthorized_client`` when refreshing and RFC 6749's ``invalid_client`` when exchanging a code.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import hdrs, web
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from gateway.emulator.consent import PKCE_VALUE
from gateway.emulator.grants import GrantBook, IssuedTokens
from gateway.emulator.state import STATE_KEY, EmulatorState
from gateway.emulator.wire import json_response, read_form

TOKEN_PATH = "/2/oauth2/token"

# Token answers carry credentials; RFC 6749 section 5.1 forbids caching them.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class _Refusal(Exception):
    """An OAuth 2.0 error answer, raised wherever the request is found wanting."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def response(self) -> web.Response:
        body = {"error": self.error, "error_description": self.description}
        return json_response(body, status=self.status, headers=_NO_STORE)


def add_token_route(router: web.UrlDispatcher) -> None:
    router.add_post(TOKEN_PATH, token)


async def token(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        form = await read_form(request)
        if form is None:
            raise _Refusal(400, "invalid_request", "The body must be application/x-www-form-urlencoded.")
        grant_type = _optional(form, "grant_type")
        failed_client = "invalid_client" if grant_type == "authorization_code" else "unauthorized_client"
        client_id = _client(request.headers.get(hdrs.AUTHORIZATION), form, state.oauth2, failed_client)
        if grant_type == "authorization_code":
            issued = _exchange_code(form, client_id, state)
        elif grant_type == "refresh_token":
            refreshed = state.oauth2.rotate(_single(form, "refresh_token"), client_id, state.now())
            if refreshed is None:
                raise _Refusal(400, "invalid_request", "Value passed for the token was invalid.")
            issued = refreshed
        elif grant_type is None:
            raise _Refusal(400, "invalid_request", "Missing required parameter [grant_type].")
        else:
            raise _Refusal(400, "unsupported_grant_type", "grant_type must be authorization_code or refresh_token.")
    except _Refusal as refusal:
        return refusal.response()
    return json_response(issued.to_json(), headers=_NO_STORE)


def _exchange_code(form: list[tuple[str, str]], client_id: str, state: EmulatorState) -> IssuedTokens:
    """A new grant for an approved code; the code is spent by this attempt whatever its outcome."""
    code, redirect_uri = _single(form, "code"), _single(form, "redirect_uri")
    verifier = _single(form, "code_verifier")
    if not PKCE_VALUE.fullmatch(verifier):
        raise _Refusal(400, "invalid_request", "code_verifier must be 43 to 128 unreserved characters.")
    approved = state.codes.take(code, state.now())
    if approved is None or approved.client_id != client_id:
        raise _Refusal(400, "invalid_grant", "Value passed for the authorization code was invalid.")
    if redirect_uri != approved.redirect_uri:
        raise _Refusal(400, "invalid_grant", "redirect_uri does not match the authorization request.")
    challenge = create_s256_code_challenge(verifier)
    if not hmac.compare_digest(challenge.encode(), approved.code_challenge.encode()):
        raise _Refusal(400, "invalid_grant", "code_verifier does not match the code_challenge.")
    if approved.user_id not in state.users:
        raise _Refusal(400, "invalid_grant", "The user who approved is gone.")
    return state.oauth2.issue(approved.user_id, client_id, approved.scope, state.now())


def _client(authorization: str | None, form: list[tuple[str, str]], book: GrantBook, failed: str) -> str:
    """The client id, once the client has proved itself; Basic and form may both name it, but alike.

    ``failed`` is the error a client that does not prove itself gets.
    """
    named = _optional(form, "client_id")
    secret = None
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() == "basic":
        login, secret = _basic_credentials(encoded, failed)
        if named is not None and named != login:
            raise _unauthorized_client(failed)
        named = login
    if not named:
        raise _Refusal(400, "invalid_request", "Missing required parameter [client_id].")
    if not book.authenticates(named, secret):
        raise _unauthorized_client(failed)
    return named


def _basic_credentials(encoded: str, failed: str) -> tuple[str, str]:
    """``client_id`` and ``client_secret`` from HTTP Basic, taken literally as clients send them.

    aiohttp's ``BasicAuth.decode`` would do, but aiohttp 3.14 deprecates the whole class.
    """
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as error:
        raise _unauthorized_client(failed) from error
    login, colon, secret = decoded.partition(":")
    if not colon:
        raise _unauthorized_client(failed)
    return login, secret


def _unauthorized_client(error: str) -> _Refusal:
    return _Refusal(401, error, "The client is unknown or did not present its secret.")


def _optional(form: list[tuple[str, str]], name: str) -> str | None:
    """A parameter given at most once; RFC 6749 refuses a request that repeats one."""
    values = [value for key, value in form if key == name]
    if len(values) > 1:
        raise _Refusal(400, "invalid_request", f"Parameter [{name}] was given more than once.")
    return values[0] if values else None


def _single(form: list[tuple[str, str]], name: str) -> str:
    value = _optional(form, name)
    if not value:
        raise _Refusal(400, "invalid_request", f"Missing required parameter [{name}].")
    return value
