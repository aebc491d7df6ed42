"""Bodies in and out of the emulator: JSON always through orjson, and form-encoded requests.

aiohttp's own JSON helpers use the standard library; routing everything through here keeps the bytes on
the wire identical to what the rest of the project produces and parses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
FORM = "application/x-www-form-urlencoded"


def json_response(
    payload: Any,
    *,
    status: int = 200,
    content_type: str = JSON,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A response whose body is ``payload`` serialised by orjson."""
    return web.Response(body=orjson.dumps(payload), status=status, content_type=content_type, headers=headers)


async def read_json(request: web.Request) -> Any:
    """The request body parsed as JSON; raises ``ValueError`` when it is not JSON at all."""
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError as error:
        raise ValueError(f"body is not JSON: {error}") from error


async def read_form(request: web.Request) -> list[tuple[str, str]] | None:
    """The name/value pairs of a form-encoded body, repeats and order kept; None for any other body.

    aiohttp's ``post()`` would fail on bytes that are not UTF-8; a client's bad encoding must end in an
    answer about its request, so undecodable bytes become U+FFFD and simply match nothing.
    """
    if request.content_type != FORM:
        return None
    return parse_qsl((await request.read()).decode("utf-8", "replace"), keep_blank_values=True)
