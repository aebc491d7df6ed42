"""Slow clients: a request body has ``server.client_timeout`` seconds to arrive once its head is in.

Request heads are bounded by aiohttp itself: its keep-alive timer (``server.keepalive_timeout``, passed to
the ``AppRunner``) closes a connection that has not delivered a complete request head that many seconds
after it opened or after the previous response, whether it sat idle or trickled its headers.

Bodies are bounded here, by ``watch_body``, which the gateway's middleware calls before anything else. When
a request arrives with its body still incoming, a timer is set for the deadline; if the body is still
incomplete then, the body stream fails with ``ClientTooSlow``, so whoever reads it (the form parser of a
legacy route, the pass-through streaming it upstream) stops at once, the caller answers 408 in its own
error shape, and the connection is closed rather than kept waiting for the rest of the body.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from gateway.keys import CLIENT_TIMEOUT_KEY

log = logging.getLogger("gateway")

# Set on a request whose body missed its deadline.
TIMED_OUT = web.RequestKey("body_timed_out", bool)


class ClientTooSlow(TimeoutError):
    """The request body did not arrive within server.client_timeout.

    A TimeoutError, so aiohttp's own reading of an unread body tail after the response treats it as a
    read that timed out and closes the connection."""


def watch_body(request: web.Request) -> asyncio.TimerHandle | None:
    """Start the body deadline of a request whose body is still arriving: the timer to cancel once the
    request is answered, or None when there is nothing to wait for (no body, or all of it already in).

    After answering a request whose timer was set, check ``timed_out``: such a connection must be closed.
    """
    content = request.content
    if content.is_eof():
        return None
    timeout = request.app[CLIENT_TIMEOUT_KEY]

    def expire() -> None:
        if content.is_eof():
            return
        request[TIMED_OUT] = True
        log.warning(
            "%s %s: request body not received within server.client_timeout (%gs); closing the connection",
            request.method,
            request.path,
            timeout,
        )
        content.set_exception(ClientTooSlow(f"request body not received within {timeout:g}s"))

    return asyncio.get_running_loop().call_later(timeout, expire)


def timed_out(request: web.Request) -> bool:
    """True when this request's body missed its deadline."""
    return request.get(TIMED_OUT, False)
