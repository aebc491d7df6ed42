"""The sidecar's guard against web browsers.

With ``[auth] sidecar = true`` a request with no credentials at all acts with the sidecar's own v2 token.
The gateway listens on loopback only, but a browser on the same machine reaches loopback too, and a web
page can make it send requests there: by a cross-site form or ``fetch`` (its ``Origin`` names the page's
site, its ``Sec-Fetch-Site`` says ``cross-site`` or ``same-site``), or by DNS rebinding, where the page's
own host name is made to resolve to 127.0.0.1 (its ``Host`` then names the attacker's domain).

So the sidecar answers only requests whose ``Host`` is a loopback address (127.0.0.0/8, ``[::1]``,
``localhost``, with or without a port) or one of ``[auth] sidecar_hosts``, and that no browser marks as
coming from another origin. A request without ``Host`` (HTTP/1.0) is not a browser's and is served.
Everything else gets 403 in the caller's dialect (problem+json on ``/2/...``) before anything else happens:
nothing is read from the store, nothing goes upstream.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDictProxy

from gateway.errors import GatewayError
from gateway.responses import problem

log = logging.getLogger("gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# host, or host:port, where host is a name or an IPv4 address, or an IPv6 address in brackets.
_AUTHORITY = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::(?P<port>[0-9]{1,5}))?")
_ORIGIN = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# What Sec-Fetch-Site says of a request a page of another origin made the browser send.
_OTHER_SITE = frozenset({"cross-site", "same-site"})


class SidecarRefused(GatewayError):
    """A request the sidecar will not act on: a browser's, from another origin, or for a host name that is not
    the sidecar's. Rendered like v2's refusal of an operation (403)."""

    kind = "forbidden"


def sidecar_guard(names: Iterable[str]) -> Middleware:
    """The middleware that refuses what the module docstring describes; ``names`` are the host names allowed
    besides loopback ones (``[auth] sidecar_hosts``)."""
    allowed = frozenset(name.lower() for name in names)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        reason = refusal(request.headers, request.scheme, allowed)
        if reason is None:
            return await handler(request)
        log.warning("sidecar refused %s %s: %s", request.method, request.path, reason)
        if request.path.startswith("/2/"):
            return problem(403, "Forbidden", "The sidecar serves only the application on its own host.", None)
        raise SidecarRefused(reason)

    return guard


def refusal(headers: CIMultiDictProxy[str], scheme: str, allowed: frozenset[str]) -> str | None:
    """Why the sidecar refuses a request with these headers, received over ``scheme``; None to serve it."""
    host = headers.get(hdrs.HOST)
    if host is not None:
        authority = _parse_authority(host)
        if authority is None or not _is_own_host(authority[0], allowed):
            return f"Host {_shown(host)} is not loopback or a name in auth.sidecar_hosts"
    site = headers.get("Sec-Fetch-Site", "").strip().lower()
    if site in _OTHER_SITE:
        return f"Sec-Fetch-Site {site}"
    origin = headers.get(hdrs.ORIGIN)
    if origin is not None and (host is None or _origin_of(origin) != _origin_of(f"{scheme}://{host}")):
        return f"Origin {_shown(origin)} is not the gateway's own"
    return None


def _parse_authority(value: str) -> tuple[str, int | None] | None:
    """(host, port) of ``host[:port]``, the host lowercased and IPv6 brackets removed; None if malformed."""
    match = _AUTHORITY.fullmatch(value.strip())
    if match is None:
        return None
    port = match["port"]
    return (match["ipv6"] or match["name"]).lower(), int(port) if port else None


def _is_own_host(host: str, allowed: frozenset[str]) -> bool:
    if host == "localhost" or host in allowed:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin_of(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of a serialized origin, the port made explicit; None for ``null`` or garbage."""
    match = _ORIGIN.fullmatch(url.strip())
    if match is None:
        return None
    authority = _parse_authority(match["authority"])
    if authority is None:
        return None
    scheme = match["scheme"].lower()
    host, port = authority
    return scheme, host, port if port is not None else _DEFAULT_PORTS.get(scheme)


def _shown(value: str) -> str:
    """A header value as the log shows it: quoted, escaped, and cut short."""
    return repr(value[:100])
