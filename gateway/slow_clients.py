"""Slow clients: a request body has ``server.client_timeout`` seconds to arrive once its head is in.

Request heads are bounded by aiohttp itself: its keep-alive timer (``server.keepalive_timeout``, passed to
the ``AppRunner``) closes a connection that has not delivered a complete request head that many seconds
after it opened or after the previous response, whether it sat idle or trickled its headers.

Bodies are bounded here, by the ``body_deadline`` middleware, the outermost of the gateway's. When a request
arrives with its body still incoming, a timer is set for the deadline; if the body is still incomplete then,
the body stream fails with ``ClientTooSlow``, so whoever reads it (the form parser of a legacy route, the
pass-through streaming it upstream) stops at once, the caller answers 408 in its own error shape, and the
connection is closed rather than kept waiting for the rest of the body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.keys import CLIENT_TIMEOUT_KEY

log = logging.getLogger("gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Set on a request whose body missed its deadline.
_TIMED_OUT = web.RequestKey("body_timed_out", bool)


class ClientTooSlow(TimeoutError):
    """The request body did not arrive within server.client_timeout.

    A TimeoutError, so aiohttp's own reading of an unread body tail after the response treats it as a
    read that timed out and closes the connection."""


@web.middleware
async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Serve the request with its body's deadline armed, then close the connection if the body failed: it
    missed the deadline, or it could not be read (a content coding that did not decode). Such a connection
    cannot carry another request, and the body is over for this one: aiohttp would otherwise try to drain
    the rest of it after the answer, fail again, and log that with a traceback."""
    timer = _watch_body(request)
    try:
        response = await handler(request)
    finally:
        if timer is not None:
            timer.cancel()
    if request.get(_TIMED_OUT, False):
        response.force_close()
    elif request.content.exception() is not None:
        request.content.feed_eof()
        response.force_close()
    return response


def _watch_body(request: web.Request) -> asyncio.TimerHandle | None:
    """Start the body deadline of a request whose body is still arriving: the timer to cancel once the
    request is answered, or None when there is nothing to wait for (no body, or all of it already in)."""
    content = request.content
    if content.is_eof():
        return None
    timeout = request.app[CLIENT_TIMEOUT_KEY]

    def expire() -> None:
        if content.is_eof():
            return
        request[_TIMED_OUT] = True
        log.warning(
            "%s %s: request body not received within server.client_timeout (%gs); closing the connection",
            request.method,
            request.path,
            timeout,
        )
        content.set_exception(ClientTooSlow(f"request body not received within {timeout:g}s"))

    return asyncio.get_running_loop().call_later(timeout, expire)
