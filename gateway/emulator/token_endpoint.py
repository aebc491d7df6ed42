"""``POST /2/oauth2/token``: renewing a user's OAuth 2.0 grant with its refresh token.

This is the one /2 route a caller reaches without a user credential: the client identifies itself (form
``client_id``, or HTTP Basic ``client_id:client_secret`` for a client with a secret) and the refresh
token says whose grant to renew. Errors are OAuth 2.0's ``{"error", "error_description"}`` JSON, not
problem+json, because that is what X's token endpoint answers and what a refreshing client must parse.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import hdrs, web

from gateway.emulator.grants import GrantBook
from gateway.emulator.state import STATE_KEY
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
        client_id = _client(request.headers.get(hdrs.AUTHORIZATION), form, state.oauth2)
        grant_type = _single(form, "grant_type")
        if grant_type != "refresh_token":
            raise _Refusal(400, "unsupported_grant_type", "This emulator only refreshes grants.")
        issued = state.oauth2.rotate(_single(form, "refresh_token"), client_id, state.now())
        if issued is None:
            raise _Refusal(400, "invalid_request", "Value passed for the token was invalid.")
    except _Refusal as refusal:
        return refusal.response()
    return json_response(issued.to_json(), headers=_NO_STORE)


def _client(authorization: str | None, form: list[tuple[str, str]], book: GrantBook) -> str:
    """The client id, once the client has proved itself; Basic and form may both name it, but alike."""
    named = _optional(form, "client_id")
    secret = None
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() == "basic":
        login, secret = _basic_credentials(encoded)
        if named is not None and named != login:
            raise _unauthorized_client()
        named = login
    if not named:
        raise _Refusal(400, "invalid_request", "Missing required parameter [client_id].")
    if not book.authenticates(named, secret):
        raise _unauthorized_client()
    return named


def _basic_credentials(encoded: str) -> tuple[str, str]:
    """``client_id`` and ``client_secret`` from HTTP Basic, taken literally as clients send them.

    aiohttp's ``BasicAuth.decode`` would do, but aiohttp 3.14 deprecates the whole class.
    """
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as error:
        raise _unauthorized_client() from error
    login, colon, secret = decoded.partition(":")
    if not colon:
        raise _unauthorized_client()
    return login, secret


def _unauthorized_client() -> _Refusal:
    return _Refusal(401, "unauthorized_client", "The client is unknown or did not present its secret.")


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
