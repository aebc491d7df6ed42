"""The /connect pages: a StatusNet user signs in with X and picks a password for their legacy client.

Mounted on the public listener only when ``[onboarding] enabled``. The flow:

1. ``GET /connect`` says what will happen; in invite mode it needs ``?invite=`` (``credentials invite``).
2. ``GET /connect/start`` starts a browser session (a random id in an HttpOnly, SameSite=Lax cookie, Secure
   over https) and sends the browser to X's authorization page: an authorization-code request with PKCE
   (S256) and a random ``state``, both kept in the session.
3. ``GET /connect/callback`` takes the code only with the cookie of the session whose ``state`` it carries,
   exchanges it (with the PKCE verifier) at ``/2/oauth2/token``, asks ``/2/users/me`` who signed in, and
   shows the form, with a CSRF token kept in the same session.
4. ``POST /connect/finish`` creates (or, for the same X account, updates) the Basic user, as
   ``credentials add-user`` would, and spends the invite.

Sessions and invites are records of the store with short expiry (``put_pending``), so any worker or replica
can carry on a flow another began. They are sealed with ``store.encryption_key`` when one is set (the PKCE
verifier, and the grant while the form waits), and keyed by a hash of the cookie or invite, never the value.
The grant's tokens never reach a page, a URL or a log line; a refusal sends nothing to X and stores nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import aiohttp_jinja2
import jinja2
import orjson
from aiohttp import web
from authlib.common.security import generate_token
from authlib.common.urls import url_decode
from authlib.oauth2.client import OAuth2Client
from authlib.oauth2.rfc6749 import OAuth2Error

from gateway.auth.credentials import BasicUser, CredentialStore, OAuth2Grant, hash_password
from gateway.auth.inbound import token_identity
from gateway.auth.upstream import BearerCredential
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.keys import SERVICE_KEY
from gateway.model import Principal
from gateway.store import codec
from gateway.store.base import StoreError
from gateway.upstream.client import UpstreamClient
from gateway.upstream.convert import user_from_answer

log = logging.getLogger("gateway.onboarding")

COOKIE = "dmgw_connect"
#: Seconds a browser has from "Sign in with X" to the saved password.
SESSION_LIFETIME = 15 * 60
#: Seconds an invite stays good unless ``credentials invite --expires-in`` says otherwise.
INVITE_LIFETIME = 7 * 24 * 3600
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_USERNAME = 64
_FORM_MAX_BYTES = 8 * 1024

_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # The invite is in /connect's URL: it must not travel on to X as a Referer.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}

ONBOARDING_KEY: web.AppKey[Onboarding] = web.AppKey("onboarding")  # the class is defined below


class Refusal(Exception):
    """A page that says no: its status, heading and reason (safe to show)."""

    def __init__(self, status: int, heading: str, reason: str, *, again: bool = False) -> None:
        super().__init__(reason)
        self.status, self.heading, self.reason, self.again = status, heading, reason, again


def invite_key(invite: str) -> str:
    return "invite:" + hashlib.sha256(invite.encode("utf-8", "surrogatepass")).hexdigest()


def _session_key(session_id: str) -> str:
    return "connect:" + hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def seal_record(record: dict[str, Any], key: str | None) -> bytes:
    """A pending record as stored: JSON, sealed with ``store.encryption_key`` when one is set."""
    sealed = codec.seal(orjson.dumps(record).decode("utf-8"), codec.cipher_for(key))
    return sealed if isinstance(sealed, bytes) else sealed.encode("utf-8")


def unseal_record(data: bytes | None, key: str | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        record = orjson.loads(codec.unseal(data, codec.cipher_for(key)))
    except (codec.UndecryptableText, orjson.JSONDecodeError):
        log.warning("an onboarding record in the store cannot be read with the configured key; ignored")
        return None
    return record if isinstance(record, dict) else None


async def create_invite(store: CredentialStore, encryption_key: str | None, public_url: str, expires_in: float) -> str:
    """A new one-time invite, stored; returns the URL to hand to the user."""
    invite = secrets.token_urlsafe(24)
    record = seal_record({"kind": "invite", "created_at": time.time()}, encryption_key)
    await store.put_pending(invite_key(invite), record, time.time() + expires_in)
    return public_url.rstrip("/") + "/connect?" + urlencode({"invite": invite})


class _AiohttpOAuth2Client(OAuth2Client):
    """authlib's OAuth 2.0 client (authorization URL, PKCE, token request and client authentication) with
    the token request sent over aiohttp: ``fetch_token`` returns a coroutine."""

    def __init__(self, http: aiohttp.ClientSession, **kwargs: Any) -> None:
        super().__init__(None, **kwargs)
        self.http = http

    async def _fetch_token(
        self, url: str, body: str = "", headers: Any = None, auth: Any = None, method: str = "POST", **kwargs: Any
    ) -> Any:
        url, headers, body = auth.prepare(method, url, dict(headers or {}), body)
        async with self.http.post(url, data=dict(url_decode(body)), headers=headers) as resp:
            token = await resp.json(content_type=None) if resp.status < 500 else None
            status = resp.status
        if not isinstance(token, dict):
            raise OAuth2Error(description=f"the token endpoint answered {status}")
        if "error" in token or status != 200 or not token.get("access_token"):
            raise OAuth2Error(error=str(token.get("error", "")), description=f"the token endpoint refused ({status})")
        return token

    def __del__(self) -> None:  # authlib's deletes ``self.session``, which this client never uses
        pass


class Onboarding:
    def __init__(self, config: Config, store: CredentialStore, http: aiohttp.ClientSession, v2: UpstreamClient) -> None:
        self.config = config
        self.store = store
        self.http = http  # for the token endpoint; v2 itself is asked through ``v2``, the upstream client
        self.v2 = v2
        onboarding, upstream = config.onboarding, config.upstream
        assert onboarding.public_url is not None and upstream.oauth2_client_id is not None
        self.public_url = onboarding.public_url.rstrip("/")
        self.redirect_uri = self.public_url + "/connect/callback"
        self.secure = self.public_url.startswith("https://")
        self.key = config.store.encryption_key

    def client(self) -> _AiohttpOAuth2Client:
        upstream = self.config.upstream
        return _AiohttpOAuth2Client(
            self.http,
            client_id=upstream.oauth2_client_id,
            client_secret=upstream.oauth2_client_secret or None,
            # A confidential client proves itself with HTTP Basic; a public one names itself in the form.
            token_endpoint_auth_method="client_secret_basic" if upstream.oauth2_client_secret else "none",
            scope=" ".join(self.config.onboarding.scopes),
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
        )

    # The pages ---------------------------------------------------------------------------------------

    async def landing(self, request: web.Request) -> web.Response:
        invite = await self._invite(request)
        start = "/connect/start" + ("?" + urlencode({"invite": invite}) if invite else "")
        return _page(request, "connect.html", {"start_url": start})

    async def start(self, request: web.Request) -> web.Response:
        invite = await self._invite(request)
        session_id = secrets.token_urlsafe(32)
        verifier = generate_token(64)
        url, state = self.client().create_authorization_url(
            self.config.upstream.oauth2_authorize_url, code_verifier=verifier
        )
        record = {
            "stage": "authorize",
            "state": state,
            "verifier": verifier,
            "invite": invite_key(invite) if invite else None,
        }
        await self.store.put_pending(
            _session_key(session_id), seal_record(record, self.key), time.time() + SESSION_LIFETIME
        )
        response = web.Response(status=302, headers={"Location": url, **_PAGE_HEADERS})
        self._set_cookie(request, response, session_id)
        return response

    async def callback(self, request: web.Request) -> web.Response:
        session_id, record = await self._session(request, "authorize")
        state = request.query.get("state", "")
        if not hmac.compare_digest(state.encode("utf-8", "surrogatepass"), record["state"].encode("ascii")):
            raise Refusal(
                400,
                "This sign-in cannot be used",
                "The answer from X does not belong to this browser's "
                "sign-in. Start again from the link you were given.",
                again=True,
            )
        if "error" in request.query or not request.query.get("code"):
            await self.store.take_pending(_session_key(session_id))
            raise Refusal(
                400, "Not connected", "X did not give this gateway access (it was refused or cancelled).", again=True
            )
        # One code per session: taken before X is asked, so a second answer on the same session finds nothing.
        if await self.store.take_pending(_session_key(session_id)) is None:
            raise _expired()
        grant, x_id, x_username = await self._exchange(request.query["code"], record["verifier"])
        csrf = secrets.token_urlsafe(32)
        finish = {
            "stage": "finish",
            "csrf": csrf,
            "invite": record["invite"],
            "x_id": x_id,
            "x_username": x_username,
            "grant": {"access": grant.access_token, "refresh": grant.refresh_token, "expires_at": grant.expires_at},
        }
        await self.store.put_pending(
            _session_key(session_id), seal_record(finish, self.key), time.time() + SESSION_LIFETIME
        )
        return self._form(request, finish, username=x_username)

    async def finish(self, request: web.Request) -> web.Response:
        session_id, record = await self._session(request, "finish")
        form = await _read_form(request)
        if not hmac.compare_digest(
            form.get("csrf_token", "").encode("utf-8", "surrogatepass"), record["csrf"].encode("ascii")
        ):
            raise Refusal(
                400,
                "This form cannot be used",
                "The form does not belong to this browser's sign-in. Start again from the link you were given.",
                again=True,
            )
        username = form.get("username", "").strip()
        password, confirm = form.get("password", ""), form.get("password_confirm", "")
        reason = _form_problem(username, password, confirm)
        existing = await self.store.get_user(username) if reason is None else None
        if existing is not None and existing.grant.user_id != record["x_id"]:
            reason = f"The username {username!r} is taken by another account. Choose another."
        if reason is not None:
            return self._form(request, record, username=username, reason=reason, status=422)
        # Spent in one step each, so that two submissions of one session (or one invite) make one user.
        if await self.store.take_pending(_session_key(session_id)) is None:
            raise _expired()
        if record["invite"] is not None and await self.store.take_pending(record["invite"]) is None:
            raise Refusal(
                403,
                "Invite no longer valid",
                "This invite was used already or has expired. Ask the operator for a new one.",
            )
        stored = record["grant"]
        grant = OAuth2Grant(
            access_token=stored["access"],
            refresh_token=stored["refresh"],
            expires_at=stored["expires_at"],
            user_id=record["x_id"],
        )
        password_hash = await asyncio.to_thread(hash_password, password)  # scrypt: off the event loop
        await self.store.put_user(BasicUser(username=username, password_hash=password_hash, grant=grant))
        verb = "updated" if existing else "added"
        log.info("onboarding: %s user %s for X account %s", verb, username, record["x_id"])
        response = _page(
            request,
            "done.html",
            {"username": username, "x_username": record["x_username"], "server_url": self.public_url + "/api"},
        )
        response.del_cookie(COOKIE, path="/connect")
        return response

    # Helpers -----------------------------------------------------------------------------------------

    async def _invite(self, request: web.Request) -> str | None:
        """The request's invite, checked, in invite mode; None in open mode."""
        if self.config.onboarding.mode == "open":
            return None
        invite = request.query.get("invite", "")
        if not invite:
            raise Refusal(
                403,
                "An invite is needed",
                "This gateway connects people by invitation. Use the link the operator gave you.",
            )
        if len(invite) > 128 or await self.store.get_pending(invite_key(invite)) is None:
            raise Refusal(
                403,
                "Invite no longer valid",
                "This invite was used already, has expired, or was mistyped. Ask the operator for a new one.",
            )
        return invite

    async def _session(self, request: web.Request, stage: str) -> tuple[str, dict[str, Any]]:
        session_id = request.cookies.get(COOKIE, "")
        if not session_id or len(session_id) > 128:
            raise Refusal(
                400,
                "No sign-in in progress",
                "This browser has no sign-in in progress (cookies off, "
                "or another browser began it). Start again from the link you were given.",
                again=True,
            )
        record = unseal_record(await self.store.get_pending(_session_key(session_id)), self.key)
        if record is None or record.get("stage") != stage:
            raise _expired()
        return session_id, record

    async def _exchange(self, code: str, verifier: str) -> tuple[OAuth2Grant, str, str]:
        upstream = self.config.upstream
        try:
            token = await self.client().fetch_token(
                upstream.oauth2_token_url, grant_type="authorization_code", code=code, code_verifier=verifier
            )
        except OAuth2Error as exc:
            log.warning("onboarding: X refused the authorization code: %s", exc.error or exc.description)
            raise Refusal(502, "Not connected", "X did not accept this sign-in. Start again.", again=True) from None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            log.warning("onboarding: the token endpoint could not be reached: %s", type(exc).__name__)
            raise Refusal(502, "Not connected", "X could not be reached. Try again in a moment.", again=True) from None
        if "offline.access" not in str(token.get("scope", "offline.access")).split() or not token.get("refresh_token"):
            raise Refusal(
                400,
                "Not connected",
                "X gave no lasting access (offline access was not allowed). Start again and allow it.",
                again=True,
            )
        expires_in = token.get("expires_in")
        grant = OAuth2Grant(
            access_token=str(token["access_token"]),
            refresh_token=str(token["refresh_token"]),
            expires_at=time.time() + float(expires_in) if isinstance(expires_in, int | float) else None,
        )
        token = grant.access_token
        principal = Principal(BearerCredential(token), "bearer", token_identity("bearer", token))
        try:
            me = user_from_answer((await self.v2.get_me(principal)).body)
        except GatewayError as exc:
            log.warning("onboarding: /2/users/me failed: %s", exc.kind)
            me = None
        if me is None or me.username is None:
            raise Refusal(502, "Not connected", "X did not say which account signed in. Start again.", again=True)
        return grant, me.id, me.username

    def _form(
        self,
        request: web.Request,
        record: dict[str, Any],
        *,
        username: str,
        reason: str | None = None,
        status: int = 200,
    ) -> web.Response:
        context = {
            "x_username": record["x_username"],
            "csrf_token": record["csrf"],
            "username": username,
            "reason": reason,
            "action": "/connect/finish",
            "min_password": MIN_PASSWORD,
            "max_username": MAX_USERNAME,
        }
        return _page(request, "finish.html", context, status=status)

    def _set_cookie(self, request: web.Request, response: web.Response, session_id: str) -> None:
        response.set_cookie(
            COOKIE,
            session_id,
            path="/connect",
            max_age=SESSION_LIFETIME,
            httponly=True,
            samesite="Lax",
            secure=self.secure or request.secure,
        )


def _expired() -> Refusal:
    return Refusal(
        400,
        "Sign-in expired",
        "This sign-in has expired or was finished already. Start again from the link you were given.",
        again=True,
    )


def _form_problem(username: str, password: str, confirm: str) -> str | None:
    if not username:
        return "Choose a username."
    if len(username) > MAX_USERNAME or ":" in username or not username.isprintable() or " " in username:
        return f"A username is at most {MAX_USERNAME} characters, without spaces or colons."
    if len(password) < MIN_PASSWORD:
        return f"The password must be at least {MIN_PASSWORD} characters long."
    if len(password) > MAX_PASSWORD:
        return f"The password must be at most {MAX_PASSWORD} characters long."
    if password != confirm:
        return "The two passwords differ. Type the same password twice."
    return None


async def _read_form(request: web.Request) -> dict[str, str]:
    if request.content_type != "application/x-www-form-urlencoded":
        raise Refusal(400, "This form cannot be used", "The form arrived in a shape this page does not take.")
    if request.content_length is not None and request.content_length > _FORM_MAX_BYTES:
        raise Refusal(413, "This form cannot be used", "The form is too large.")
    try:
        form = await request.post()
    except (ValueError, web.HTTPException):
        raise Refusal(400, "This form cannot be used", "The form could not be read.") from None
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _page(request: web.Request, template: str, context: dict[str, Any], *, status: int = 200) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers.update(_PAGE_HEADERS)
    return response


def _handler(method: str) -> Any:
    async def handle(request: web.Request) -> web.Response:
        onboarding = request.app[ONBOARDING_KEY]
        try:
            response: web.Response = await getattr(onboarding, method)(request)
            return response
        except Refusal as caught:
            refusal = caught
        except StoreError as exc:
            log.warning("onboarding: the store failed: %s", exc)
            refusal = Refusal(503, "Try again later", "The gateway cannot keep sign-ins just now. Try again soon.")
        again = "/connect" if refusal.again and onboarding.config.onboarding.mode == "open" else None
        context = {"heading": refusal.heading, "reason": refusal.reason, "again_url": again}
        return _page(request, "problem.html", context, status=refusal.status)

    return handle


def setup(app: web.Application, config: Config, store_of: Any) -> None:
    """Mount /connect on the gateway ``app``. ``store_of(app)`` is the app's store once it is open."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app.router.add_get("/connect", _handler("landing"))
    app.router.add_get("/connect/start", _handler("start"))
    app.router.add_get("/connect/callback", _handler("callback"))
    app.router.add_post("/connect/finish", _handler("finish"))

    async def resources(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=config.upstream.timeout, sock_connect=config.upstream.connect_timeout)
        async with aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()) as http:
            app[ONBOARDING_KEY] = Onboarding(config, store_of(app), http, app[SERVICE_KEY].upstream)
            yield

    app.cleanup_ctx.append(resources)
