"""The gateway's answers as aiohttp responses: a dialect's ``LegacyResponse``, and v2's problem+json (RFC 9457)
for what the gateway itself refuses on ``/2/...``."""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.dialects import LegacyResponse

PROBLEM_JSON = "application/problem+json"


def to_web(response: LegacyResponse) -> web.Response:
    web_response = web.Response(status=response.status, body=response.body or None)
    if response.content_type:
        web_response.headers["Content-Type"] = response.content_type
    for name, value in response.headers:
        web_response.headers[name] = value
    return web_response


def problem(status: int, title: str, detail: str, request_id: str | None) -> web.Response:
    """A v2-style problem+json answer; ``request_id``, when given, is sent back as ``X-Request-Id``."""
    body = {"title": title, "detail": detail, "type": "about:blank", "status": status}
    response = web.Response(status=status, body=orjson.dumps(body), content_type=PROBLEM_JSON)
    if request_id:
        response.headers["X-Request-Id"] = request_id
    return response
