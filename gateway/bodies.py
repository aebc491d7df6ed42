"""Reading a routed request's body: the ``Expect: 100-continue`` answer, a legacy form (text fields only) and a
JSON document, each bounded by ``server.max_body_bytes`` and ``server.client_timeout`` and refused in the
caller's dialect when unreadable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import orjson
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDict, MultiDictProxy

from gateway.auth.inbound import oauth1_signed
from gateway.errors import BadRequest, PayloadTooLarge, RequestTimeout
from gateway.slow_clients import ClientTooSlow

#: The form of a request without one (no body, or a body of another type).
EMPTY_FORM: MultiDictProxy[str] = MultiDictProxy(MultiDict())


async def expect_continue(request: web.Request) -> None:
    """The ``Expect`` header of a routed request: ``100-continue`` is answered with the interim 100 at once,
    as aiohttp does; any other expectation is ignored (RFC 9110, section 10.1.1), so that the call gets its
    own answer, in its dialect's shape and with its request id, rather than aiohttp's plain-text 417."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version >= aiohttp.HttpVersion11 and expect.strip().lower() == "100-continue":
        try:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        except ConnectionResetError:
            return  # the client is gone already: the call finds that out as it reads the body
        request.writer.output_size = 0  # the interim answer is not part of the response's size


@contextmanager
def _reading_body(what: str) -> Iterator[None]:
    """How reading any legacy body fails for the client: over ``server.max_body_bytes`` (413), or not all
    there within ``server.client_timeout`` (408)."""
    try:
        yield
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"{what} over the configured limit") from None
    except ClientTooSlow as exc:
        raise RequestTimeout(str(exc)) from None
    except web.RequestPayloadError as exc:  # aiohttp decodes a gzip or deflate body as it arrives
        raise BadRequest(f"{what} unreadable: {exc}") from None


async def read_form(request: web.Request) -> MultiDictProxy[str]:
    """The text fields of a form body; an empty form for a body of any other type. An OAuth 1.0a signature
    covers a form-encoded body but never a multipart one, so a signed call may not send one: its fields
    would be parameters the caller never signed (a recipient, say)."""
    if request.content_type not in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        return EMPTY_FORM
    if request.content_type == "multipart/form-data" and oauth1_signed(request):
        raise BadRequest("a multipart body on an OAuth 1.0a-signed call: its fields are not signed")
    try:
        with _reading_body("form body"):
            form = await request.post()
    except (ValueError, LookupError, RuntimeError, HttpProcessingError) as exc:
        # Malformed part headers, an unknown charset or transfer encoding: the client's fault, not a 500.
        raise BadRequest(f"unreadable form body: {type(exc).__name__}") from None
    # File parts are never parameters of a legacy DM call; keep only text fields.
    return MultiDictProxy(MultiDict((k, v) for k, v in form.items() if isinstance(v, str)))


async def read_json(request: web.Request) -> Any:
    """The JSON document a route takes as its body, or None when there is none (the dialect then names what
    is missing). Bounded like a form body; a body that is not JSON is a bad request."""
    if not request.body_exists:
        return None
    with _reading_body("JSON body"):
        raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not JSON") from None
