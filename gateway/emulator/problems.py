"""Error bodies in the shapes X API v2 sends, and the exception that carries one to the middleware.

Handlers raise ``Problem`` where they notice something wrong; the middleware alone turns it into a
response, so every error leaves with the problem+json content type and the rate-limit headers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from aiohttp import web

from gateway.emulator.wire import PROBLEM_JSON, json_response

PROBLEM_TYPES = "https://api.twitter.com/2/problems/"


class Problem(Exception):
    """An error answer: HTTP status, JSON body and any extra headers (``Allow`` for a 405)."""

    def __init__(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {body.get('title', '')}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})

    def response(self, headers: Mapping[str, str] | None = None) -> web.Response:
        return json_response(
            self.body,
            status=self.status,
            content_type=PROBLEM_JSON,
            headers={**self.headers, **(headers or {})},
        )


def plain(status: int, detail: str | None = None, headers: Mapping[str, str] | None = None) -> Problem:
    """The bare ``about:blank`` problem v2 uses for transport-level refusals (401, 429, 503...)."""
    title = _phrase(status)
    body = {"title": title, "type": "about:blank", "status": status, "detail": detail or title}
    return Problem(status, body, headers)


def _phrase(status: int) -> str:
    """The reason phrase, or a generic one for codes outside the registry (a CDN's 520, say)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def unauthorized() -> Problem:
    return plain(401)


def forbidden() -> Problem:
    return plain(403, "You are not a participant in this conversation.")


def too_many_requests() -> Problem:
    return plain(429)


def parameter_error(parameter: str, values: Sequence[str], message: str) -> dict[str, Any]:
    """One entry of an invalid-request ``errors`` list, naming the parameter and its bad values."""
    return {"parameters": {parameter: list(values)}, "message": message}


def invalid_request(errors: Sequence[dict[str, Any]]) -> Problem:
    body = {
        "errors": list(errors),
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": f"{PROBLEM_TYPES}invalid-request",
    }
    return Problem(400, body)


def resource_not_found(resource_type: str, parameter: str, value: str, label: str) -> dict[str, Any]:
    """The entry v2 puts in ``errors`` for an id that names nothing (a user, an expanded sender...)."""
    return {
        "value": value,
        "detail": f"Could not find {label} with {parameter}: [{value}].",
        "title": "Not Found Error",
        "resource_type": resource_type,
        "parameter": parameter,
        "resource_id": value,
        "type": f"{PROBLEM_TYPES}resource-not-found",
    }


def dm_event_not_found(event_id: str) -> Problem:
    """A 404 for a DM event that does not exist, or that this caller has deleted."""
    body = resource_not_found("dm_event", "id", event_id, "DM event")
    return Problem(404, {**body, "status": 404})


def bad_control_request(detail: str) -> Problem:
    """A 400 for a malformed request to one of the /_emulator/ control endpoints."""
    return plain(400, detail)
