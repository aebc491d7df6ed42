"""The gateway's middlewares: the per-request work around every handler, one small layer each.

``create_app`` lists them from the outside in; each one's place in that order is part of what it does:

1. ``body_deadline`` (in ``gateway.slow_clients``): armed before anything reads the body, so it is first;
   after the answer it closes a connection whose body missed the deadline or could not be read.
2. ``count_requests``: one count by dialect, route template and the status the client got, so it sees the
   answer after every layer that may change it.
3. ``request_id``: the client's ``X-Request-Id`` when well-formed, else a new one; handlers send it upstream,
   the error boundary logs it, and every answer carries it, error answers included.
4. ``error_boundary``: whatever goes wrong inside (a handler, aiohttp's router, the sidecar guard, JSONP's
   refusal) becomes the calling dialect's own error; the outermost layer that answers, so no exception
   reaches aiohttp from a request that got that far.
5. ``jsonp``: a JSON answer to a call with a ``callback``, error answers included, becomes
   ``callback(...)``; a callback that is no JavaScript name is refused before the call.

With ``[auth] sidecar = true`` the sidecar guard comes last, inside all of them and before any handler.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from gateway.bodies import EMPTY_FORM
from gateway.dialects import Dialect
from gateway.dialects.base import JSONP_TYPE, TRUE_VALUES, jsonp_callback
from gateway.edge import ClientGone, client_gone, new_request_id
from gateway.errors import (
    BadRequest,
    GatewayError,
    Internal,
    MethodNotAllowed,
    NotAuthenticated,
    PayloadTooLarge,
    RouteNotFound,
)
from gateway.keys import DIALECT, FORM, FORMAT, METRICS_KEY, REQUEST_ID, ROUTER_KEY
from gateway.metrics import route_label
from gateway.responses import to_web

log = logging.getLogger("gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the request by dialect (``v2`` for the pass-through, ``unknown`` for a path no dialect's),
    route template and the status of its answer."""
    response = await handler(request)
    dialect = request.get(DIALECT)
    route = route_label(request)
    if dialect is not None:
        name = dialect.name
    elif route.startswith("/2/"):
        name = "v2"
    else:
        name = "unknown"
    request.app[METRICS_KEY].request_answered(name, route, response.status)
    return response


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Name the request by the client's ``X-Request-Id`` when it is well-formed, else by a new id, and send
    that name back on the answer."""
    incoming = request.headers.get("X-Request-Id", "")
    name = request[REQUEST_ID] = incoming if _REQUEST_ID_OK.fullmatch(incoming) else new_request_id()
    response = await handler(request)
    response.headers["X-Request-Id"] = name
    return response


@web.middleware
async def error_boundary(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer any exception raised inside with the calling dialect's error."""
    try:
        return await handler(request)
    except Exception as exc:  # noqa: BLE001 - the error boundary; CancelledError is not an Exception
        return _error_answer(request, exc)


@web.middleware
async def jsonp(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Wrap the JSON answer of a call with a ``callback`` (to a dialect that honoured one) in it. The errors
    of such a call are answered here, as the error boundary would answer them, so that they are wrapped too."""
    callback = _jsonp_callback(request)
    if callback is None:
        return await handler(request)
    try:
        response = await handler(request)
    except Exception as exc:  # noqa: BLE001 - answered as by the error boundary, to be wrapped
        response = _error_answer(request, exc)
    _wrap_jsonp(response, callback)
    return response


def _error_answer(request: web.Request, exc: Exception) -> web.Response:
    """The calling dialect's answer to an exception raised while serving ``request``; an unexpected one is
    logged with its traceback (so call this while handling it). ``suppress_response_codes`` applies."""
    error = _as_gateway_error(request, exc)
    if error.kind.startswith("upstream") or error.kind == "internal":
        log.warning("request %s failed: %s (%s)", request.get(REQUEST_ID), error.kind, error.detail)
    dialect: Dialect = request.get(DIALECT) or request.app[ROUTER_KEY].for_path(request.path)
    fmt = request.get(FORMAT) or dialect.error_format(request.path)
    suppress = _suppress_response_codes(request)
    return to_web(dialect.render_error(error, fmt, request.path, suppress=suppress))


def _as_gateway_error(request: web.Request, exc: Exception) -> GatewayError:
    """The gateway error an exception out of a handler stands for; an unexpected one is logged with its
    traceback."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, web.HTTPNotFound):
        return RouteNotFound(request.path)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        # HEAD goes unsaid: it comes with every GET, and legacy messages name only the methods of the call.
        return MethodNotAllowed(tuple(sorted(exc.allowed_methods - {"HEAD"})), request.method)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge()
    if isinstance(exc, web.HTTPClientError):
        return BadRequest(exc.reason)
    if isinstance(exc, web.RequestPayloadError):  # a body aiohttp could not decode (gzip, deflate)
        return BadRequest(f"unreadable body: {type(exc.__cause__ or exc).__name__}")
    if client_gone(request, exc):
        log.debug("request %s: the client closed the connection mid-body", request.get(REQUEST_ID))
        return ClientGone("client closed the connection before its body was complete")
    log.exception("unexpected error, request id %s", request.get(REQUEST_ID))  # noqa: LOG004 - called in except
    return Internal()


def _suppress_response_codes(request: web.Request) -> bool:
    values = request.query.getall("suppress_response_codes", [])
    values += request.get(FORM, EMPTY_FORM).getall("suppress_response_codes", [])
    return any(value.strip().lower() in TRUE_VALUES for value in values)


def _jsonp_callback(request: web.Request) -> str | None:
    """The JSONP callback of a JSON call to a dialect that wraps JSON answers (StatusNet's, from the query
    string, as a ``<script>`` calls), or None; a malformed one is an invalid parameter, refused before
    the call is authenticated or made."""
    if "callback" not in request.query or request.path.startswith("/2/"):
        return None  # none asked for, or the pass-through: v2's own answers
    dialect = request.app[ROUTER_KEY].for_path(request.path)
    if not dialect.jsonp or (request.match_info.get("fmt") or dialect.error_format(request.path)) != "json":
        return None
    callback = jsonp_callback(request.query.getall("callback"))
    if callback is not None and _ambient_credentials(request):
        raise NotAuthenticated("Basic credentials on a JSONP call another site's page made")
    return callback


def _ambient_credentials(request: web.Request) -> bool:
    """Whether a browser may have added the credentials by itself: Basic credentials it keeps for the site,
    on a request a page of another site made (``Sec-Fetch-Site``). A JSONP answer is a script any page can
    include, so it is given for such credentials only to the site's own pages; a browser-based client
    signs its calls (OAuth 1.0a) instead, which no other page can do for it."""
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    authorization = request.headers.get(hdrs.AUTHORIZATION, "")
    return site in ("cross-site", "same-site") and authorization[:6].lower() == "basic "


def _wrap_jsonp(response: web.StreamResponse, callback: str) -> None:
    """A JSON answer as ``callback(...)``, served as JavaScript; any other answer is left alone. U+2028 and
    U+2029, which JSON strings may hold but JavaScript before ES2019 may not, are written escaped."""
    if (
        isinstance(response, web.Response)
        and response.content_type == "application/json"
        and isinstance(response.body, bytes | bytearray)
        and response.body
    ):
        body = bytes(response.body).replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
        response.body = b"%s(%s)" % (callback.encode("ascii"), body)
        response.headers[hdrs.CONTENT_TYPE] = JSONP_TYPE
