"""Injected failures: the outages, slow answers and dropped connections a real upstream produces.

Tests cannot wait for X to misbehave, so they describe the misbehaviour as rules. Rules are consulted in
order and the first match wins; a rule with ``times`` set wears out after that many matches, which is how
a test says "fail twice, then recover".
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from fnmatch import fnmatchcase
from typing import Any, Literal, get_args

from aiohttp import web

from gateway.emulator.problems import plain
from gateway.emulator.wire import JSON, PROBLEM_JSON, json_response

Action = Literal["status", "reset", "delay"]


@dataclass(slots=True)
class FaultRule:
    """What to do to requests whose method and path (an fnmatch glob) match.

    ``status`` answers ``status`` with a problem+json body (or ``body``, or ``text`` as it is, which need not
    be JSON at all, under the JSON content type); ``reset`` drops the connection
    without any answer; ``delay`` waits ``delay`` seconds and then answers normally. A ``status`` or
    ``reset`` rule waits ``delay`` seconds first, too. ``times=None`` means the rule never wears out.
    """

    method: str = "*"
    path: str = "*"
    action: Action = "status"
    status: int = 503
    delay: float = 0.0
    times: int | None = None
    body: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if self.action not in get_args(Action):
            raise ValueError(f"action must be one of {', '.join(get_args(Action))}")
        if not isinstance(self.method, str) or not isinstance(self.path, str):
            raise ValueError("method and path must be strings")
        if not _is_count(self.status) or not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if isinstance(self.delay, bool) or not isinstance(self.delay, int | float) or not self.delay >= 0:
            raise ValueError("delay must be a non-negative number of seconds")
        if self.times is not None and not _is_count(self.times):
            raise ValueError("times must be a non-negative integer or null")
        if self.body is not None and not isinstance(self.body, dict):
            raise ValueError("body must be a JSON object")
        if self.text is not None and (not isinstance(self.text, str) or self.body is not None):
            raise ValueError("text must be a string, and not given with body")
        if self.headers is not None and not _is_str_map(self.headers):
            raise ValueError("headers must map strings to strings")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaultRule:
        """Build a rule from a control-endpoint payload, refusing fields it does not know."""
        unknown = set(data) - {field.name for field in fields(cls)}
        if unknown:
            raise ValueError(f"unknown fault rule fields: {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def matches(self, method: str, path: str) -> bool:
        if self.times == 0:
            return False
        return self.method.upper() in ("*", method.upper()) and fnmatchcase(path, self.path)


def _is_count(value: object) -> bool:
    """True for a non-negative int; JSON booleans are ints to Python, so they are turned away here."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_str_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def take_fault(rules: list[FaultRule], method: str, path: str) -> FaultRule | None:
    """The first rule matching this request, with one of its uses spent."""
    for rule in rules:
        if rule.matches(method, path):
            if rule.times is not None:
                rule.times -= 1
            return rule
    return None


async def apply_fault(rule: FaultRule, request: web.Request) -> web.Response | None:
    """Carry out ``rule``; None means the request should now be served as usual."""
    if rule.delay:
        await asyncio.sleep(rule.delay)
    match rule.action:
        case "delay":
            return None
        case "reset":
            return _drop_connection(request)
        case "status":
            return _status_response(rule)


def _drop_connection(request: web.Request) -> web.Response:
    """Close the socket with nothing written, so the client sees the server disconnect mid-request.

    aiohttp still wants a response object from the handler. It is never sent, since the transport is
    gone by the time aiohttp writes it; its status only shows in the access log.
    """
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=499)


def _status_response(rule: FaultRule) -> web.Response:
    if rule.text is not None:
        response = web.Response(status=rule.status, text=rule.text, content_type=JSON)
    elif rule.body is None:
        response = plain(rule.status).response() if rule.status >= 400 else web.Response(status=rule.status)
    else:
        content_type = PROBLEM_JSON if rule.status >= 400 else JSON
        response = json_response(rule.body, status=rule.status, content_type=content_type)
    response.headers.update(rule.headers or {})
    return response
