"""X's OAuth 2.0 consent page: the authorization-code flow's first leg, with PKCE.

An app sends its user's browser to ``GET /i/oauth2/authorize`` with ``response_type=code``, its
``client_id``, a registered ``redirect_uri``, the ``scope`` it wants, a ``state`` and an S256
``code_challenge``. The page names the app and the scopes; its form posts the same parameters back with
the ``screen_name`` of the seeded user who approves (the emulator's stand-in for X's login), or with
``cancel``. Approval redirects to ``redirect_uri?state=…&code=…``; a cancel to ``?error=access_denied``.

The client and redirect URI are checked first: while either is wrong the answer is an HTML error page,
never a redirect, so the page cannot bounce a browser to an address nobody registered. Once both hold,
other faults go back to the app as RFC 6749's ``error`` redirect. The posted form is checked again
from scratch: its hidden fields are as untrusted as the query they came from.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from yarl import URL

from gateway.emulator.codes import AUTHORIZATION_CODE_LIFETIME, AuthorizationCode
from gateway.emulator.state import STATE_KEY, EmulatorState
from gateway.emulator.wire import read_form

# The OAuth 2.0 clients of the default seed, both with the loopback ``/connect/callback`` registered as
# redirect URI (any port): a confidential one, authenticating with HTTP Basic, and a public one.
EMULATOR_OAUTH2_CLIENT_ID = "emulator-oauth2-client"
EMULATOR_OAUTH2_CLIENT_SECRET = "emulator-oauth2-client-secret"  # a public test fixture
EMULATOR_OAUTH2_PUBLIC_CLIENT_ID = "emulator-client"

OAUTH2_AUTHORIZE_PATH = "/i/oauth2/authorize"
OAUTH2_PATHS = frozenset({OAUTH2_AUTHORIZE_PATH})

# The scopes X's OAuth 2.0 knows, with the words its consent page uses for them.
SCOPES = {
    "tweet.read": "See posts from your timeline, including protected posts.",
    "tweet.write": "Post and repost for you.",
    "tweet.moderate.write": "Hide and unhide replies to your posts.",
    "users.read": "See any account you can view, including protected accounts.",
    "users.email": "See your email address.",
    "follows.read": "See who you follow and who follows you.",
    "follows.write": "Follow and unfollow people for you.",
    "offline.access": "Stay connected to your account until you revoke access.",
    "space.read": "See all the Spaces you can view.",
    "mute.read": "See accounts you have muted.",
    "mute.write": "Mute and unmute accounts for you.",
    "like.read": "See posts you have liked and likes you can view.",
    "like.write": "Like and unlike posts for you.",
    "list.read": "See lists, their members and followers.",
    "list.write": "Create and manage lists for you.",
    "block.read": "See accounts you have blocked.",
    "block.write": "Block and unblock accounts for you.",
    "bookmark.read": "See your bookmarks.",
    "bookmark.write": "Add and remove bookmarks for you.",
    "dm.read": "See all your direct messages.",
    "dm.write": "Send and manage direct messages for you.",
    "media.write": "Upload media for you.",
}

_FIELDS = ("response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method")
_FORM_FIELDS = (*_FIELDS, "screen_name", "cancel", "approve")
# RFC 7636 section 4.2: a challenge (and a verifier) is 43 to 128 unreserved characters.
PKCE_VALUE = re.compile(r"[A-Za-z0-9._~-]{43,128}", re.ASCII)
MAX_FIELD = 2048

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True, slots=True)
class _Authorization:
    """An authorization request whose every parameter checked out."""

    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str
    code_challenge: str

    def fields(self) -> dict[str, str]:
        return {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": " ".join(self.scopes),
            "state": self.state,
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
        }


class _Refused(Exception):
    """The answer to a request that cannot go on: an error page or an error redirect."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__(response.status)
        self.response = response


def add_consent_routes(router: web.UrlDispatcher) -> None:
    router.add_get(OAUTH2_AUTHORIZE_PATH, consent_page, allow_head=False)
    router.add_post(OAUTH2_AUTHORIZE_PATH, decide)


async def consent_page(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    try:
        fields = _single_fields(request.query.items(), (*_FIELDS, "screen_name"))
        asked = _authorization(fields, state)
    except _Refused as refused:
        return refused.response
    app_name = state.oauth2.app_names.get(asked.client_id, asked.client_id)
    scopes = "\n".join(f"<li><code>{_e(scope)}</code>: {_e(SCOPES[scope])}</li>" for scope in asked.scopes)
    hidden = "\n".join(
        f'<input type="hidden" name="{name}" value="{_e(value)}">' for name, value in asked.fields().items()
    )
    body = (
        f"<h1>{_e(app_name)} wants to access your X account</h1>\n"
        f"<p>It will be able to:</p>\n<ul>\n{scopes}\n</ul>\n"
        f'<form method="post" action="{OAUTH2_AUTHORIZE_PATH}">\n{hidden}\n'
        '<p><label for="screen_name">Username</label>\n'
        f'<input type="text" id="screen_name" name="screen_name" value="{_e(fields.get("screen_name", ""))}"'
        ' autocomplete="username"></p>\n'
        '<p><button type="submit" id="allow" name="approve" value="1">Authorize app</button>\n'
        '<button type="submit" id="cancel" name="cancel" value="1">Cancel</button></p>\n'
        "</form>"
    )
    return _page(200, f"Authorize {app_name}", body)


async def decide(request: web.Request) -> web.StreamResponse:
    """The consent form's target: the user's answer goes back to the app by redirect."""
    state = request.app[STATE_KEY]
    try:
        form = await read_form(request)
        if form is None:
            raise _Refused(_page(400, "Bad request", "<p>The form must be application/x-www-form-urlencoded.</p>"))
        fields = _single_fields(form, _FORM_FIELDS)
        asked = _authorization(fields, state)
    except _Refused as refused:
        return refused.response
    if "cancel" in fields:
        return _redirect(asked.redirect_uri, state=asked.state, error="access_denied")
    user = state.user_named(fields.get("screen_name", ""))
    if user is None:
        return _page(400, "Unknown user", "<p>No account has that username.</p>")
    approved = AuthorizationCode(
        asked.client_id,
        asked.redirect_uri,
        " ".join(asked.scopes),
        asked.code_challenge,
        str(user["id"]),
        state.now() + AUTHORIZATION_CODE_LIFETIME,
    )
    return _redirect(asked.redirect_uri, state=asked.state, code=state.codes.issue(approved))


def _authorization(fields: dict[str, str], state: EmulatorState) -> _Authorization:
    """The request, checked: client and redirect URI (an error page), then the rest (an error redirect)."""
    client_id, redirect_uri = fields.get("client_id", ""), fields.get("redirect_uri", "")
    if client_id not in state.oauth2.clients:
        raise _Refused(_page(400, "Unknown app", "<p>This app is unknown: its client_id is not registered.</p>"))
    if not state.oauth2.redirect_uri_allowed(client_id, redirect_uri):
        raise _Refused(_page(400, "Bad redirect", "<p>The redirect_uri is not one this app registered.</p>"))
    echo = fields.get("state")

    def refuse(error: str, description: str) -> _Refused:
        return _Refused(_redirect(redirect_uri, error=error, error_description=description, state=echo))

    if fields.get("response_type") != "code":
        raise refuse("unsupported_response_type", "response_type must be code.")
    if not echo:
        raise refuse("invalid_request", "Missing required parameter [state].")
    challenge = fields.get("code_challenge", "")
    if not PKCE_VALUE.fullmatch(challenge):
        raise refuse("invalid_request", "code_challenge must be 43 to 128 unreserved characters.")
    if fields.get("code_challenge_method") != "S256":
        raise refuse("invalid_request", "code_challenge_method must be S256.")
    scopes = tuple(dict.fromkeys(fields.get("scope", "").split()))
    if not scopes or any(scope not in SCOPES for scope in scopes):
        raise refuse("invalid_scope", "scope must name X's OAuth 2.0 scopes, separated by spaces.")
    return _Authorization(client_id, redirect_uri, scopes, echo, challenge)


def _single_fields(pairs: Iterable[tuple[str, str]], known: tuple[str, ...]) -> dict[str, str]:
    """The known parameters, each given at most once and of a sane length; else an error page."""
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name not in known:
            continue
        if name in fields:
            raise _Refused(_page(400, "Bad request", f"<p>The parameter {_e(name)} was given more than once.</p>"))
        if len(value) > MAX_FIELD:
            raise _Refused(_page(400, "Bad request", f"<p>The parameter {_e(name)} is too long.</p>"))
        fields[name] = value
    return fields


def _redirect(redirect_uri: str, **query: str | None) -> web.Response:
    """A 302 to the (already validated) redirect URI with the answer's parameters added."""
    location = URL(redirect_uri).extend_query({key: value for key, value in query.items() if value is not None})
    return web.Response(status=302, headers={"Location": str(location), **_NO_STORE})


def _page(status: int, title: str, body: str) -> web.Response:
    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title></head>\n<body>\n{body}\n</body></html>\n"
    )
    return web.Response(text=document, status=status, content_type="text/html", headers=_NO_STORE)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)
