"""The HTTP server under the gateway: aiohttp's, with the gateway's own answer to requests it cannot read.

aiohttp's HTTP parser refuses a malformed request head (bare LF line endings, an over-long line, duplicate
``Content-Length``, bytes no header may hold) before any middleware runs, and its own error handling then
logs the exception at ERROR, with a traceback and the request head it quotes (``Authorization`` included),
and echoes that text to the client in a ``text/plain`` 400. aiohttp has no setting for that, so the public
listener runs on ``GatewayRunner``, an ``AppRunner`` whose connections are served by
``GatewayRequestHandler``: a parser error there is logged as one line naming the kind of error and the
peer, never the bytes received, and answered with a short plain 400 that closes the connection. The path is
not known at that point (aiohttp does not pass on what it parsed), so the answer cannot be in a dialect's
shape; errors in a body (a broken chunk, a body cut short) come later, from reading it, and are answered by
the error boundary in the caller's dialect like any other bad request.

Everything else (a 504 on a handler timeout, a 500 from a handler that escaped the error boundary) is left
to aiohttp as it is.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from gateway.errors import BadRequest

log = logging.getLogger("gateway")

_PARSER_ERROR_BODY = "400 Bad Request: the request could not be read.\n"


class GatewayRequestHandler(RequestHandler):
    """aiohttp's protocol for one connection, answering requests that do not parse as the module says."""

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
        response = web.Response(status=400, text=_PARSER_ERROR_BODY)
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's server, serving each connection with ``GatewayRequestHandler``."""

    def __call__(self) -> RequestHandler:
        return GatewayRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An ``AppRunner`` (same arguments) whose server answers unreadable requests as the module says."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # starts the application and builds aiohttp's server for it
        return _Server(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **made._kwargs,  # the protocol's settings, as the runner and the application gave them
        )


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
