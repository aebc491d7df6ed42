"""The gateway as OAuth 1.0a provider: the login endpoints legacy clients call before any DM call.

``POST /oauth/request_token``, ``GET /oauth/authorize`` and ``/oauth/authenticate``, ``POST
/oauth/access_token`` (also under each StatusNet prefix, ``/api/oauth/...``) and ``POST
/1.1/oauth/invalidate_token`` (under each v1.1 prefix) answer as X answers them: form-encoded
``oauth_token=…&oauth_token_secret=…``. Every request is verified like a legacy DM call (signature, timestamp
window, nonce) before anything reaches X, and every refusal is the dialect's own 401.

Two kinds of registered consumer:

- A live X app (``credentials add-consumer KEY SECRET``): each call is re-signed with the same consumer and
  sent to X at the same path; the gateway keeps the request token's secret (to verify the client's
  ``access_token`` call) and, from X's answer, the user's access token and secret, so that the client's next
  DM call just works. ``authorize`` sends the browser to X's page for the token.
- A consumer X no longer knows (``--via-upstream-app``): the gateway runs X's three-legged flow with the
  operator's own app (``[upstream] oauth1_consumer_key``) and hands the client request and access tokens of
  its own, random, bound to the consumer and mapped to the X access token obtained. X sends the browser back
  to the gateway's ``/oauth/callback``, which sends it on to the client's callback with the client's request
  token and a verifier of the gateway's; for ``oob`` the PIN X shows is what the client sends back. xAuth
  (``x_auth_mode=client_auth``) logs a gateway Basic user in instead: the token then acts with that user's
  v2 grant. The consumer's key never reaches X.

Pending request tokens are single use and expire after ``REQUEST_TOKEN_LIFETIME`` seconds.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import replace
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import orjson
from aiohttp import web
from authlib.oauth1 import ClientAuth
from multidict import MultiMapping

from gateway.auth.credentials import Consumer, RequestToken, Token
from gateway.bodies import EMPTY_FORM, expect_continue, read_form
from gateway.dialects import FAMILIES, Dialect
from gateway.errors import (
    BadAuthData,
    BadRequest,
    GatewayError,
    InvalidToken,
    NotAuthenticated,
    UpstreamFailure,
    UpstreamUnavailable,
)
from gateway.keys import AUTH_KEY, CONFIG_KEY, DIALECT, FORM, FORMAT, REQUEST_ID, SERVICE_KEY, STORE_KEY
from gateway.model import Principal, UpstreamCredential
from gateway.store.base import StoreError
from gateway.upstream.convert import user_from_answer

log = logging.getLogger("gateway.oauth")

#: Seconds a request token stays good for its ``access_token`` call.
REQUEST_TOKEN_LIFETIME = 15 * 60
#: The longest callback URL, token, verifier and xAuth field taken.
MAX_CALLBACK_CHARS = 2048
MAX_FIELD_CHARS = 256
#: The most of X's answer to a login call that is read.
MAX_ANSWER_BYTES = 64 * 1024

SESSION_KEY = web.AppKey("oauth_provider_session", aiohttp.ClientSession)

Handler = Callable[[web.Request, MultiMapping[str]], Awaitable[web.StreamResponse]]


def setup(app: web.Application) -> None:
    """Mount the login endpoints, at the root and under each StatusNet prefix, and invalidate_token under
    each v1.1 prefix; give them an HTTP session of their own for X's login endpoints."""
    config = app[CONFIG_KEY]
    v1_1, statusnet = FAMILIES["v1_1"][0](config.render), FAMILIES["statusnet"][0](config.render)
    mounted: set[tuple[str, str]] = set()

    def add(method: str, path: str, dialect: Dialect, handler: Handler) -> None:
        if (method, path) not in mounted:  # a family mounted at the root shares the root's paths
            mounted.add((method, path))
            app.router.add_route(method, path, _handle(dialect, handler), expect_handler=expect_continue)

    for prefix, dialect in [("", v1_1), *((p, statusnet) for p in config.routes.statusnet)]:
        for method in ("POST", "GET"):
            add(method, f"{prefix}/oauth/request_token", dialect, request_token)
        for method in ("POST", "GET"):
            add(method, f"{prefix}/oauth/access_token", dialect, access_token)
        add("GET", f"{prefix}/oauth/authorize", dialect, authorize)
        add("GET", f"{prefix}/oauth/authenticate", dialect, authorize)
    add("GET", "/oauth/callback", v1_1, callback)
    for prefix in config.routes.v1_1:
        add("POST", f"{prefix}/oauth/invalidate_token", v1_1, invalidate_token)
    app.cleanup_ctx.append(_session)


async def _session(app: web.Application) -> AsyncIterator[None]:
    upstream = app[CONFIG_KEY].upstream
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=upstream.timeout, sock_connect=upstream.connect_timeout),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    app[SESSION_KEY] = session
    try:
        yield
    finally:
        await session.close()


def _handle(dialect: Dialect, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        request[DIALECT] = dialect
        request[FORMAT] = dialect.error_format(request.path)
        form = await read_form(request) if request.body_exists else EMPTY_FORM
        request[FORM] = form
        try:
            response = await handler(request, form)
        except StoreError as exc:
            raise UpstreamUnavailable(f"credential store unavailable: {exc}") from exc
        response.headers["Cache-Control"] = "no-store"
        return response

    return handle


# The endpoints -----------------------------------------------------------------------------------------


async def request_token(request: web.Request, form: MultiMapping[str]) -> web.StreamResponse:
    auth, store = request.app[AUTH_KEY], request.app[STORE_KEY]
    oauth, params = auth.read_oauth(request, form, _oauth_header(request), token_required=False)
    if oauth.get("oauth_token"):
        raise BadAuthData("a request-token call carries no token")
    consumer = await _consumer(request, oauth["oauth_consumer_key"])
    auth.check_signature(request, params, oauth, consumer.secret, "")
    await auth.spend_nonce(oauth, consumer.key, "")
    client_callback = _callback(oauth.get("oauth_callback") or "oob")
    expires_at = time.time() + REQUEST_TOKEN_LIFETIME
    if not consumer.via_upstream_app:
        signer = ClientAuth(consumer.key, consumer.secret, redirect_uri=client_callback)
        path = _with_access_type(request, "/oauth/request_token")
        answer = await _ask_x(request, path, signer, refusal=NotAuthenticated)
        token = RequestToken(
            answer["oauth_token"], consumer.key, answer["oauth_token_secret"], client_callback, expires_at
        )
        await store.put_request_token(token)
        return _form_answer(answer.items())
    app_key, app_secret = _upstream_app(request)
    own = secrets.token_urlsafe(24)
    # X sends the browser back to this gateway, which knows its request by this token of its own.
    x_callback = "oob" if client_callback == "oob" else _with_query(_own_url(request, "/oauth/callback"), request=own)
    signer = ClientAuth(app_key, app_secret, redirect_uri=x_callback)
    answer = await _ask_x(request, _with_access_type(request, "/oauth/request_token"), signer, refusal=UpstreamFailure)
    token = RequestToken(
        own,
        consumer.key,
        secrets.token_urlsafe(32),
        client_callback,
        expires_at,
        upstream_token=answer["oauth_token"],
        upstream_secret=answer["oauth_token_secret"],
    )
    await store.put_request_token(token)
    return _form_answer(
        [("oauth_token", token.token), ("oauth_token_secret", token.secret), ("oauth_callback_confirmed", "true")]
    )


async def authorize(request: web.Request, form: MultiMapping[str]) -> web.StreamResponse:
    """``authorize`` and ``authenticate``: the browser goes on to X's page of the same name for the token
    (for a consumer acting through the operator's app, X's token that the gateway's stands for)."""
    store = request.app[STORE_KEY]
    pending = await store.get_request_token(_bounded(request.query.get("oauth_token", ""), "oauth_token"))
    consumer = await store.get_consumer(pending.consumer_key) if pending is not None else None
    if pending is None or consumer is None:
        raise InvalidToken("no such pending request token")
    x_token = pending.upstream_token if consumer.via_upstream_app else pending.token
    query = [("oauth_token", x_token or "")]
    query += [(k, _bounded(v, k)) for k, v in request.query.items() if k in ("force_login", "screen_name")]
    page = "authenticate" if request.path.endswith("/authenticate") else "authorize"
    return _redirect(_x_url(request, f"/oauth/{page}") + "?" + urlencode(query))


async def callback(request: web.Request, form: MultiMapping[str]) -> web.StreamResponse:
    """Where X sends the browser back for a consumer acting through the operator's app: on to the client's
    callback, with the client's request token and a verifier of the gateway's own."""
    store = request.app[STORE_KEY]
    pending = await store.get_request_token(_bounded(request.query.get("request", ""), "request"))
    if pending is None or pending.upstream_token is None or pending.verifier is not None or pending.callback == "oob":
        raise InvalidToken("no login waiting for X's answer under that request")
    denied = request.query.get("denied")
    x_token = _bounded(denied if denied is not None else request.query.get("oauth_token", ""), "oauth_token")
    if not hmac.compare_digest(x_token.encode(), pending.upstream_token.encode()):
        raise InvalidToken("X's token is not the one this login is waiting for")
    if denied is not None:  # the user said no at X: the client hears it as X would have said it
        await store.take_request_token(pending.token)
        return _redirect(_with_query(pending.callback, denied=pending.token))
    x_verifier = _bounded(request.query.get("oauth_verifier", ""), "oauth_verifier")
    if not x_verifier:
        raise InvalidToken("X sent no oauth_verifier")
    verifier = secrets.token_urlsafe(24)
    await store.put_request_token(replace(pending, verifier=verifier, upstream_verifier=x_verifier))
    return _redirect(_with_query(pending.callback, oauth_token=pending.token, oauth_verifier=verifier))


async def access_token(request: web.Request, form: MultiMapping[str]) -> web.StreamResponse:
    auth, store = request.app[AUTH_KEY], request.app[STORE_KEY]
    oauth, params = auth.read_oauth(
        request, form, _oauth_header(request), token_required=False, loose=("oauth_verifier",)
    )
    consumer = await _consumer(request, oauth["oauth_consumer_key"])
    if not oauth.get("oauth_token"):
        return await _xauth(request, consumer, oauth, params)
    pending = await store.get_request_token(oauth["oauth_token"])
    if pending is None or pending.consumer_key != consumer.key:
        raise InvalidToken("unknown, expired or spent request token, or one of another consumer")
    auth.check_signature(request, params, oauth, consumer.secret, pending.secret)
    await auth.spend_nonce(oauth, consumer.key, pending.token)
    if await store.take_request_token(pending.token) is None:  # single use: another call took it first
        raise InvalidToken("request token already spent")
    verifier = _bounded(oauth.get("oauth_verifier", ""), "oauth_verifier")
    if not verifier:
        raise InvalidToken("no oauth_verifier")
    if not consumer.via_upstream_app:
        signer = ClientAuth(consumer.key, consumer.secret, pending.token, pending.secret, verifier=verifier)
        answer = await _ask_x(request, "/oauth/access_token", signer, refusal=InvalidToken)
        await _put_token(request, Token(answer["oauth_token"], consumer.key, answer["oauth_token_secret"]))
        return _form_answer(answer.items())
    if pending.callback != "oob":
        # X answered the gateway's callback with its verifier; the client got one of the gateway's.
        if pending.verifier is None or not hmac.compare_digest(verifier.encode(), pending.verifier.encode()):
            raise InvalidToken("wrong oauth_verifier")
        verifier = pending.upstream_verifier or ""
    app_key, app_secret = _upstream_app(request)
    signer = ClientAuth(app_key, app_secret, pending.upstream_token, pending.upstream_secret, verifier=verifier)
    answer = await _ask_x(request, "/oauth/access_token", signer, refusal=InvalidToken)
    user_id, screen_name = answer.get("user_id", ""), answer.get("screen_name", "")
    token = Token(
        _new_token(user_id),
        consumer.key,
        secrets.token_urlsafe(32),
        upstream_token=answer["oauth_token"],
        upstream_secret=answer["oauth_token_secret"],
    )
    await _put_token(request, token)
    return _form_answer(_access_answer(token, user_id, screen_name))


async def _xauth(
    request: web.Request, consumer: Consumer, oauth: dict[str, str], params: list[tuple[str, str]]
) -> web.StreamResponse:
    """xAuth: a username and password of the gateway's Basic users, for a consumer that acts through the
    operator's app. A login like any other: failed ones are counted by the same throttle."""
    auth = request.app[AUTH_KEY]
    names = ("x_auth_mode", "x_auth_username", "x_auth_password")
    fields = {name: [v for k, v in params if k == name] for name in names}
    if fields["x_auth_mode"] != ["client_auth"]:
        raise BadAuthData("an access-token call without a request token must be xAuth (x_auth_mode=client_auth)")
    auth.check_signature(request, params, oauth, consumer.secret, "")
    await auth.spend_nonce(oauth, consumer.key, "")
    if not consumer.via_upstream_app:
        raise NotAuthenticated("xAuth is for consumers that act through the upstream app")
    if len(fields["x_auth_username"]) != 1 or len(fields["x_auth_password"]) != 1:
        raise BadAuthData("xAuth needs one x_auth_username and one x_auth_password")
    username = _bounded(fields["x_auth_username"][0], "x_auth_username")
    password = _bounded(fields["x_auth_password"][0], "x_auth_password")
    if not username or not password:
        raise NotAuthenticated("empty xAuth username or password")
    user = await auth.check_login(request, username, password)
    user_id, screen_name = await _who(request, auth.grant_credential(user), user.username)
    token = Token(_new_token(user_id), consumer.key, secrets.token_urlsafe(32), upstream_user=user.username)
    await _put_token(request, token)
    return _form_answer([*_access_answer(token, user_id, screen_name), ("x_auth_expires", "0")])


async def invalidate_token(request: web.Request, form: MultiMapping[str]) -> web.StreamResponse:
    """Forget the access token the call is signed with; X is told too when the token is X's (a live app's,
    or the X token a gateway token was mapped to). Later calls with it are refused (89)."""
    auth, store = request.app[AUTH_KEY], request.app[STORE_KEY]
    oauth, params = auth.read_oauth(request, form, _oauth_header(request))
    consumer = await _consumer(request, oauth["oauth_consumer_key"])
    token = await store.get_token(oauth["oauth_token"])
    if token is None or token.consumer_key != consumer.key:
        raise InvalidToken("unknown token, or a token of another consumer")
    auth.check_signature(request, params, oauth, consumer.secret, token.secret)
    await auth.spend_nonce(oauth, consumer.key, token.token)
    await store.remove_credential("token", token.token)
    signer = None
    if token.upstream_token is not None and token.upstream_secret is not None:
        app_key, app_secret = _upstream_app(request)
        signer = ClientAuth(app_key, app_secret, token.upstream_token, token.upstream_secret)
    elif not consumer.via_upstream_app and token.upstream_user is None:
        signer = ClientAuth(consumer.key, consumer.secret, token.token, token.secret)
    if signer is not None:
        try:
            await _ask_x(request, "/1.1/oauth/invalidate_token", signer, refusal=InvalidToken, form=False)
        except GatewayError as exc:  # forgotten here all the same; X's copy dies on its own terms
            log.warning("X was not told of an invalidated token: %s (%s)", exc.kind, exc.detail)
    body = orjson.dumps({"access_token": token.token})
    return web.Response(body=body, content_type="application/json")


# Helpers -----------------------------------------------------------------------------------------------


def _oauth_header(request: web.Request) -> str:
    """The ``Authorization: OAuth`` header, or "" when the parameters are in the query or the body."""
    header = request.headers.get("Authorization", "").strip()
    if not header.isascii():
        raise BadAuthData("authorization header is not ASCII")
    scheme = header.partition(" ")[0].lower()
    if header and scheme != "oauth":
        raise BadAuthData(f"the login endpoints take OAuth 1.0a, not {scheme[:20]!r}")
    return header


async def _consumer(request: web.Request, key: str) -> Consumer:
    consumer = await request.app[STORE_KEY].get_consumer(key)
    if consumer is None:
        raise NotAuthenticated("unknown consumer")
    return consumer


def _upstream_app(request: web.Request) -> tuple[str, str]:
    upstream = request.app[CONFIG_KEY].upstream
    if not upstream.oauth1_consumer_key or not upstream.oauth1_consumer_secret:
        raise UpstreamUnavailable("a consumer acts through the upstream app; [upstream] oauth1_consumer_key is unset")
    return upstream.oauth1_consumer_key, upstream.oauth1_consumer_secret


def _callback(value: str) -> str:
    """``oob`` or an absolute http(s) URL, bounded and free of anything a Location header must not hold."""
    if value == "oob":
        return value
    if len(value) > MAX_CALLBACK_CHARS or not value.isascii() or any(ch <= " " or ch == "\x7f" for ch in value):
        raise BadRequest("oauth_callback is not a usable URL")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise BadRequest("oauth_callback is not a URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise BadRequest("oauth_callback must be oob or an absolute http(s) URL")
    return value


def _bounded(value: str, name: str) -> str:
    if len(value) > MAX_FIELD_CHARS:
        raise BadRequest(f"{name} over {MAX_FIELD_CHARS} characters")
    return value


def _with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to its query (before any fragment)."""
    base, hash_mark, fragment = url.partition("#")
    joined = base + ("&" if "?" in base else "?") + urlencode(params)
    return joined + hash_mark + fragment


def _with_access_type(request: web.Request, path: str) -> str:
    """X's request-token path, with the ``x_auth_access_type`` (``read``, ``write``) the client asked for."""
    access_type = request.query.get("x_auth_access_type")
    if access_type is None:
        return path
    if access_type not in ("read", "write"):
        raise BadRequest("x_auth_access_type must be read or write")
    return f"{path}?x_auth_access_type={access_type}"


def _own_url(request: web.Request, path: str) -> str:
    return request.app[AUTH_KEY].own_base_url(request) + path


def _x_url(request: web.Request, path: str) -> str:
    return request.app[CONFIG_KEY].upstream.base_url.rstrip("/") + path


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


def _form_answer(pairs: Iterable[tuple[str, str]]) -> web.Response:
    return web.Response(body=urlencode(list(pairs)).encode(), content_type="application/x-www-form-urlencoded")


def _access_answer(token: Token, user_id: str, screen_name: str) -> list[tuple[str, str]]:
    pairs = [("oauth_token", token.token), ("oauth_token_secret", token.secret)]
    if user_id:
        pairs.append(("user_id", user_id))
    if screen_name:
        pairs.append(("screen_name", screen_name))
    return pairs


def _new_token(user_id: str) -> str:
    """A fresh access token, led by the user's id as X's are when that id is known (some clients read it)."""
    own = secrets.token_urlsafe(30)
    return f"{user_id}-{own}" if user_id.isascii() and user_id.isdigit() and len(user_id) <= 20 else own


async def _put_token(request: web.Request, token: Token) -> None:
    try:
        await request.app[STORE_KEY].put_token(token)
    except ValueError:  # the consumer was removed while its user logged in
        raise InvalidToken("the consumer is no longer registered") from None


async def _ask_x(
    request: web.Request,
    path: str,
    signer: ClientAuth,
    *,
    refusal: type[GatewayError],
    form: bool = True,
) -> dict[str, str]:
    """POST one of X's OAuth 1.0a endpoints, signed by ``signer``; X's form-encoded answer (it must hold a
    token and its secret when ``form``). X's refusal becomes ``refusal``; X's own words never reach the
    client."""
    url = _x_url(request, path)
    _, headers, _ = signer.sign("POST", url, {}, b"")
    session = request.app[SESSION_KEY]
    outgoing = {"Authorization": headers["Authorization"], "X-Request-Id": request[REQUEST_ID]}
    try:
        async with session.post(url, headers=outgoing, allow_redirects=False) as response:
            raw = await response.content.read(MAX_ANSWER_BYTES + 1)
            status = response.status
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise UpstreamUnavailable(f"X's {path} failed: {type(exc).__name__}") from exc
    if status >= 500 or status == 429:
        raise UpstreamUnavailable(f"X's {path} answered {status}")
    if status != 200:
        raise refusal(f"X's {path} refused ({status})")
    if not form:
        return {}
    if len(raw) > MAX_ANSWER_BYTES:
        raise UpstreamFailure(f"X's {path} answer is over {MAX_ANSWER_BYTES} bytes")
    try:
        answer = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        raise UpstreamFailure(f"X's {path} answer is not a form") from None
    if not answer.get("oauth_token") or not answer.get("oauth_token_secret"):
        raise UpstreamFailure(f"X's {path} answer has no token")
    return answer


async def _who(request: web.Request, credential: UpstreamCredential, username: str) -> tuple[str, str]:
    """The X id and screen name of a Basic user, from ``/2/users/me`` with their grant; the username alone
    when X cannot say (the login stands either way)."""
    principal = Principal(credential, "basic", f"basic:{username}")
    try:
        response = await request.app[SERVICE_KEY].upstream.get_me(principal, request[REQUEST_ID])
        me = user_from_answer(response.body)
    except GatewayError as exc:
        log.info("users/me for %s after xAuth failed: %s", username, exc.kind)
        return "", username
    if me is None or me.username is None:
        return "", username
    return me.id, me.username
