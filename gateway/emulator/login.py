"""X's OAuth 1.0a sign-in: request token, the authorization page, access token and invalidation.

A registered app (a seeded consumer, ``APP_CONSUMER_KEY`` in the default seed) asks for a request token,
sends its user's browser to ``/oauth/authorize`` (or ``/oauth/authenticate``), where the user approves,
and trades the request token and the verifier it got back (through the callback, or typed in as a PIN
for ``oob``) for an access token of that user. The access token then signs v2 calls like the seeded ones.

The approval page is the emulator's stand-in for X's login: its form names the seeded user who signs in
(``screen_name``), so tests approve by posting the form. Request tokens are random, single use (spent by
a signed access-token request, whether its verifier is right or wrong) and expire after
``REQUEST_TOKEN_LIFETIME`` (see ``request_tokens``); a signature that does not check out spends nothing.

Refusals on the API endpoints are v1.1-style JSON (``{"errors": [{"code", "message"}]}``), those on the
pages small HTML pages, since a browser shows them.
"""

from __future__ import annotations

import html
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from yarl import URL

from gateway.emulator.oauth1 import AccessToken, SignedRequest, read_signed_request
from gateway.emulator.request_tokens import PendingLogin
from gateway.emulator.state import STATE_KEY, EmulatorState
from gateway.emulator.wire import FORM, json_response, read_form

# The app consumer of the default seed: register it wherever an X app's key and secret are configured.
APP_CONSUMER_KEY = "emulator-consumer"
APP_CONSUMER_SECRET = "emulator-consumer-secret"  # a public test fixture, not a secret

REQUEST_TOKEN_PATH = "/oauth/request_token"
AUTHORIZE_PATH = "/oauth/authorize"
AUTHENTICATE_PATH = "/oauth/authenticate"
ACCESS_TOKEN_PATH = "/oauth/access_token"
INVALIDATE_TOKEN_PATH = "/1.1/oauth/invalidate_token"
# These authenticate in their handlers, each in its own way, and X does not meter them with v2's quotas.
LOGIN_PATHS = frozenset(
    {REQUEST_TOKEN_PATH, AUTHORIZE_PATH, AUTHENTICATE_PATH, ACCESS_TOKEN_PATH, INVALIDATE_TOKEN_PATH}
)

OOB = "oob"
MAX_CALLBACK = 2048
MAX_FIELD = 256

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def add_login_routes(router: web.UrlDispatcher) -> None:
    # X takes the token requests as GET too, which some old clients send; the signature covers the method.
    router.add_route("GET", REQUEST_TOKEN_PATH, request_token)
    router.add_route("GET", ACCESS_TOKEN_PATH, access_token)
    router.add_post(REQUEST_TOKEN_PATH, request_token)
    router.add_get(AUTHORIZE_PATH, authorization_page, allow_head=False)
    router.add_get(AUTHENTICATE_PATH, authorization_page, allow_head=False)
    router.add_post(AUTHORIZE_PATH, approve)
    router.add_post(ACCESS_TOKEN_PATH, access_token)
    router.add_post(INVALIDATE_TOKEN_PATH, invalidate_token)


# --- the API endpoints ------------------------------------------------------------------------------


async def request_token(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    signed = await read_signed_request(request)
    if signed is None or not state.oauth1.check_signature(signed, state.now(), None):
        return _could_not_authenticate()
    # An app that names no callback gets the PIN, as X did for apps that registered none.
    callbacks = _parameter(signed, "oauth_callback") or [OOB]
    callback = callbacks[0]
    if len(callbacks) > 1 or not _acceptable_callback(callback):
        return _v1_error(400, 417, "Callback URL not approved for this client application.")
    token, login = state.logins.issue(signed.protocol["oauth_consumer_key"], callback, state.now())
    return _form_response(
        {"oauth_token": token, "oauth_token_secret": login.secret, "oauth_callback_confirmed": "true"}
    )


async def access_token(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    signed = await read_signed_request(request)
    if signed is None:
        return _could_not_authenticate()
    token = signed.protocol.get("oauth_token", "")
    login = state.logins.live(token, state.now())
    if login is None:
        return _invalid_token()
    if login.consumer != signed.protocol.get("oauth_consumer_key"):
        return _could_not_authenticate()
    if not state.oauth1.check_signature(signed, state.now(), login.secret):
        return _could_not_authenticate()
    state.logins.spend(token)
    verifiers = _parameter(signed, "oauth_verifier")
    if login.verifier is None or login.user_id is None:
        return _invalid_token()
    if len(verifiers) != 1 or not secrets.compare_digest(verifiers[0].encode(), login.verifier.encode()):
        return _v1_error(401, 32, "Invalid oauth_verifier parameter.")
    user = state.users.get(login.user_id)
    if user is None:
        return _invalid_token()
    key, secret = f"{login.user_id}-{secrets.token_urlsafe(24)}", secrets.token_urlsafe(32)
    state.oauth1.tokens[key] = AccessToken(secret, login.consumer, login.user_id)
    return _form_response(
        {
            "oauth_token": key,
            "oauth_token_secret": secret,
            "user_id": login.user_id,
            "screen_name": str(user["username"]),
        }
    )


async def invalidate_token(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    signed = await read_signed_request(request)
    if signed is None or state.oauth1.verify(signed, state.now()) is None:
        return _invalid_token()
    token = signed.protocol["oauth_token"]
    del state.oauth1.tokens[token]
    return json_response({"access_token": token}, headers=_NO_STORE)


# --- the pages ----------------------------------------------------------------------------------------


async def authorization_page(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    token = request.query.get("oauth_token", "")
    login = _login_to_approve(state, token)
    if isinstance(login, web.Response):
        return login
    app_name = state.oauth1.app_names.get(login.consumer, login.consumer)
    screen_name = request.query.get("screen_name", "")[:MAX_FIELD]
    body = (
        f"<h1>Authorize {_e(app_name)} to use your account?</h1>\n"
        f'<form method="post" action="{AUTHORIZE_PATH}">\n'
        f'<input type="hidden" name="oauth_token" value="{_e(token)}">\n'
        f'<label>Username <input type="text" name="screen_name" value="{_e(screen_name)}"></label>\n'
        '<input type="submit" id="allow" value="Authorize app">\n'
        '<input type="submit" id="cancel" name="cancel" value="Cancel">\n'
        "</form>"
    )
    return _page(200, f"Authorize {app_name}", body)


async def approve(request: web.Request) -> web.Response:
    """The approve form's target: the user's choice goes back to the app by redirect, or as a PIN."""
    state = request.app[STATE_KEY]
    form = await read_form(request)
    if form is None:
        return _page(400, "Bad request", "<p>The form must be application/x-www-form-urlencoded.</p>")
    fields = _single_fields(form, ("oauth_token", "screen_name", "cancel"))
    if fields is None:
        return _page(400, "Bad request", "<p>A form field was given more than once.</p>")
    token = fields.get("oauth_token", "")
    login = _login_to_approve(state, token)
    if isinstance(login, web.Response):
        return login
    if "cancel" in fields:
        state.logins.spend(token)
        if login.callback == OOB:
            return _page(200, "Denied", "<p>You did not authorize the app; nothing was shared.</p>")
        raise web.HTTPFound(str(URL(login.callback).extend_query(denied=token)))
    user = state.user_named(fields.get("screen_name", ""))
    if user is None:
        return _page(400, "Unknown user", "<p>No account has that username.</p>")
    login.user_id = str(user["id"])
    if login.callback == OOB:
        login.verifier = f"{secrets.randbelow(10**7):07d}"
        return _page(
            200,
            "Authorized",
            "<p>Next, return to the app and enter this PIN to complete the authorization process:</p>\n"
            f'<code id="oauth_pin">{login.verifier}</code>',
        )
    login.verifier = secrets.token_urlsafe(24)
    redirect = URL(login.callback).extend_query(oauth_token=token, oauth_verifier=login.verifier)
    raise web.HTTPFound(str(redirect))


def _login_to_approve(state: EmulatorState, token: str) -> PendingLogin | web.Response:
    """A live request token nobody has approved yet, or the error page to show instead."""
    if not token:
        return _page(400, "Bad request", "<p>The request lacks an oauth_token.</p>")
    login = state.logins.live(token, state.now())
    if login is None or login.verifier is not None:
        return _page(401, "Invalid token", "<p>This page is no longer valid: its request token is unknown or used.</p>")
    return login


# --- helpers ------------------------------------------------------------------------------------------


def _parameter(signed: SignedRequest, name: str) -> list[str]:
    """A protocol parameter's values: from the ``Authorization`` header, else from the query and form."""
    if name in signed.protocol:
        return [signed.protocol[name]]
    return [value for key, value in signed.params if key == name]


def _acceptable_callback(callback: str) -> bool:
    if callback == OOB:
        return True
    if len(callback) > MAX_CALLBACK or not callback.isprintable():
        return False
    try:
        url = URL(callback)
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.host)


def _single_fields(form: list[tuple[str, str]], known: tuple[str, ...]) -> dict[str, str] | None:
    fields: dict[str, str] = {}
    for name, value in form:
        if name not in known:
            continue
        if name in fields:
            return None
        fields[name] = value[:MAX_FIELD]
    return fields


def _form_response(values: Mapping[str, str]) -> web.Response:
    return web.Response(text=urlencode(values), content_type=FORM, headers=_NO_STORE)


def _v1_error(status: int, code: int, message: str) -> web.Response:
    return json_response({"errors": [{"code": code, "message": message}]}, status=status)


def _could_not_authenticate() -> web.Response:
    return _v1_error(401, 32, "Could not authenticate you.")


def _invalid_token() -> web.Response:
    return _v1_error(401, 89, "Invalid or expired token.")


def _page(status: int, title: str, body: str) -> web.Response:
    document = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title></head>\n<body>\n{body}\n</body></html>\n"
    )
    return web.Response(text=document, status=status, content_type="text/html", headers=_NO_STORE)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)
