"""The HTTP server under the gateway: aiohttp's, with the gateway's own answer to requests it cannot read.

aiohttp's HTTP parser refuses a malformed request head (bare LF line endings, an over-long line, duplicate
``Content-Length``, bytes no header may hold) before any middleware runs, and its own error handling then
logs the exception at ERROR, with a traceback and the request head it quotes (``Authorization`` included),
and echoes that text to the client in a ``text/plain`` 400. aiohttp has no setting for that, so the public
listener runs on ``GatewayRunner``, an ``AppRunner`` whose connections are served by
``GatewayRequestHandler``: a parser error there is logged as one line naming the kind of error and the
peer, never the bytes received, and answered with a 400 that closes the connection. aiohttp does not pass
on what it parsed before the error, so the handler keeps the request line each connection opens with (at
most 2 KiB): when that first request fails and its request line reads as one, the answer is
the bad request of the dialect its path belongs to (problem+json on ``/2/...``); otherwise it is a short
plain-text 400.

A chunked body whose framing breaks once its request is being handled (a bad chunk size arriving after the
head) is a parser error too, which aiohttp only queues as the next "request", leaving the handler waiting
for the rest of the body until ``server.client_timeout``; ``GatewayRequestHandler`` fails that body's
stream at once with ``BodyUnreadable`` instead, which the error boundary answers as a bad request in the
caller's dialect, and the connection is closed after the answer.

Everything else (a 504 on a handler timeout, a 500 from a handler that escaped the error boundary) is left
to aiohttp as it is.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from random import getrandbits
from typing import Any

from aiohttp import StreamReader, web, web_response
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from gateway.errors import BadRequest
from gateway.keys import ROUTER_KEY
from gateway.responses import problem, to_web

log = logging.getLogger("gateway")

#: The Server header of every answer of the gateway's listeners, the errors aiohttp answers itself included:
#: the product's name, never its version or the versions of Python and aiohttp (aiohttp's default). aiohttp
#: reads it from this module variable when it prepares any response, so it is set where the gateway's HTTP
#: server is defined, and holds for every application this process serves.
SERVER_HEADER = "legacy-dm-gateway"
web_response.SERVER_SOFTWARE = SERVER_HEADER  # type: ignore[attr-defined]  # aiohttp's own global, not exported

_PARSER_ERROR_BODY = "400 Bad Request: the request could not be read.\n"
# The longest request line kept from a connection's opening bytes, for a first request that fails.
_OPENING = 2048
# An origin-form request line: method, path (only characters a path may hold), optional query, version; or,
# when the line was longer than what is kept of it, its start up to the end of the path.
_REQUEST_LINE = re.compile(rb"[A-Z]{1,20} (/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)(?:\?[^ ]*)? HTTP/1\.[01]\r?")
_LONG_REQUEST_LINE = re.compile(rb"[A-Z]{1,20} (/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)\?")

Answer = Callable[[str], web.Response]


def new_request_id() -> str:
    """A fresh request id: 128 random bits as 32 lowercase hex digits (the form of a UUID's hex).

    An id names a request in the logs, it guards nothing, so it comes from the process's pseudo-random
    generator rather than from the operating system: no system call on every request. The generator is
    seeded from the system at start and again in a forked child, so workers do not share ids.
    """
    return getrandbits(128).to_bytes(16, "big").hex()


class BodyUnreadable(BadRequest, TimeoutError):
    """A request body that broke while it was being read: a bad chunk, a content coding that does not decode.

    Also a TimeoutError, like ``gateway.slow_clients.ClientTooSlow``: aiohttp reads what is left of an
    unread body after the answer, and treats a read that fails so as the end of the connection, quietly."""


class GatewayRequestHandler(RequestHandler):
    """aiohttp's protocol for one connection, answering requests that do not parse as the module says."""

    __slots__ = ("_answer", "_failed_body", "_opening")

    def __init__(self, manager: _Server, *args: Any, **kwargs: Any) -> None:
        super().__init__(manager, *args, **kwargs)
        self._answer = manager.answer
        self._failed_body: StreamReader | None = None
        self._opening = b""

    def data_received(self, data: bytes) -> None:
        if not self._request_count and len(self._opening) < _OPENING and not self._opening.endswith(b"\n"):
            line, newline, _ = (self._opening + data[:_OPENING]).partition(b"\n")
            self._opening = line + newline  # the request line is all that is needed
        super().data_received(data)
        # aiohttp queues a parser error as one more message (its private _ErrInfo); when the request being
        # handled is still waiting for its body, that error is this body's, and ends it.
        request = self._current_request
        if request is None or not self._messages:
            return
        error, body = self._messages[-1][0], request.content
        if isinstance(error, _ErrInfo) and not body.is_eof() and body is not self._failed_body:
            self._failed_body = body
            what = type(error.exc).__name__
            log.info("unreadable request body from %s: %s; answered 400", request.remote, what)
            # Soon rather than now: body bytes parsed before the error may just have woken the reader, which
            # would miss an exception set before it waits again.
            self._loop.call_soon(body.set_exception, BodyUnreadable(f"request body unreadable: {what}"))

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        # A body aiohttp could not decode (a gzip or deflate stream that is not one) fails its stream with
        # RequestPayloadError. After the answer aiohttp drains what is left of an unread body, and logs any
        # failure of that but a timeout at ERROR with a traceback: make it a BodyUnreadable, which is one.
        body = request.content
        failed = body.exception()
        if failed is not None and not isinstance(failed, TimeoutError | ConnectionError):
            body.set_exception(BodyUnreadable(f"request body unreadable: {type(failed.__cause__ or failed).__name__}"))
        return await super().finish_response(request, resp, start_time)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        # The exception's text quotes the bytes received, which may hold credentials: name its kind only.
        log.info("unreadable request from %s: %s; answered 400", request.remote, type(exc).__name__)
        path = self._first_path() if self._request_count == 1 else None
        response = web.Response(status=400, text=_PARSER_ERROR_BODY) if path is None else self._answer(path)
        response.headers["X-Request-Id"] = new_request_id()  # like every answer: one id to name it by
        response.force_close()
        return response

    def _first_path(self) -> str | None:
        """The path in the request line the connection opened with, if it reads as one."""
        opening = self._opening
        if opening.endswith(b"\n"):
            match = _REQUEST_LINE.fullmatch(opening.removesuffix(b"\n"))
        else:  # a request line too long to keep whole: its path, if the query is what made it long
            match = _LONG_REQUEST_LINE.match(opening)
        return match[1].decode("ascii") if match else None


class _Server(web.Server):
    """aiohttp's server, serving each connection with ``GatewayRequestHandler``; ``answer`` renders the
    bad request for a path."""

    def __init__(self, answer: Answer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answer = answer

    def __call__(self) -> RequestHandler:
        return GatewayRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An ``AppRunner`` (same arguments) whose server answers unreadable requests as the module says."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # starts the application and builds aiohttp's server for it
        app = self.app
        return _Server(
            lambda path: bad_request_for(app, path),
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **made._kwargs,  # the protocol's settings, as the runner and the application gave them
        )


def bad_request_for(app: web.Application, path: str) -> web.Response:
    """The gateway's answer to an unreadable request for ``path``: the bad request of the dialect the path
    belongs to, or v2's problem+json on ``/2/...``."""
    if path.startswith("/2/"):
        return problem(400, "Bad Request", "The request could not be read.", None)
    dialect = app[ROUTER_KEY].for_path(path)
    return to_web(dialect.render_error(BadRequest("unreadable request"), dialect.error_format(path), path))


class ClientGone(BadRequest):
    """The client closed the connection before its request body was complete. Nobody reads the answer;
    the access log and the metrics count it as the bad request it was."""


def client_gone(request: web.Request, exc: Exception) -> bool:
    """Whether ``exc`` out of a handler is only the client having closed the connection (reading the body
    of a request whose connection was lost raises ``ConnectionResetError``)."""
    if not isinstance(exc, ConnectionResetError):
        return False
    transport = request.transport
    return transport is None or transport.is_closing()
