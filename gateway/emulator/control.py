"""The /_emulator/ endpoints: steering a running emulator from another process (tests, the demo).

They mirror what in-process tests do to ``EmulatorState`` directly. The middleware neither records
them nor applies faults or quotas to them, so a test can always reach the controls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.emulator.faults import FaultRule
from gateway.emulator.problems import bad_control_request
from gateway.emulator.ratelimit import Limit
from gateway.emulator.state import STATE_KEY
from gateway.emulator.wire import json_response, read_json

CONTROL_PREFIX = "/_emulator/"


def add_control_routes(router: web.UrlDispatcher) -> None:
    router.add_post(f"{CONTROL_PREFIX}faults", replace_faults)
    router.add_delete(f"{CONTROL_PREFIX}faults", clear_faults)
    router.add_get(f"{CONTROL_PREFIX}requests", list_requests, allow_head=False)
    router.add_delete(f"{CONTROL_PREFIX}requests", clear_requests)
    router.add_post(f"{CONTROL_PREFIX}reset", reset)
    router.add_post(f"{CONTROL_PREFIX}rate-limits", set_rate_limit)


async def replace_faults(request: web.Request) -> web.Response:
    """Install ``{"rules": [...]}`` in place of the current rules; answers with the rules as stored."""
    rules = (await _json_object(request)).get("rules")
    if not isinstance(rules, list) or not all(isinstance(rule, dict) for rule in rules):
        raise bad_control_request('"rules" must be a list of fault rule objects')
    try:
        parsed = [FaultRule.from_json(rule) for rule in rules]
    except (TypeError, ValueError) as error:
        raise bad_control_request(str(error)) from error
    request.app[STATE_KEY].faults[:] = parsed
    return json_response({"rules": [rule.to_json() for rule in parsed]})


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE_KEY].faults.clear()
    return web.Response(status=204)


async def list_requests(request: web.Request) -> web.Response:
    return json_response([recorded.to_json() for recorded in request.app[STATE_KEY].requests])


async def clear_requests(request: web.Request) -> web.Response:
    request.app[STATE_KEY].requests.clear()
    return web.Response(status=204)


async def reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return web.Response(status=204)


async def set_rate_limit(request: web.Request) -> web.Response:
    """Apply ``{"endpoint": "DELETE /2/dm_events/:id", "limit": 2, "window": 900}`` from now on."""
    body = await _json_object(request)
    endpoint = body.get("endpoint")
    if not isinstance(endpoint, str):
        raise bad_control_request('"endpoint" must be a string such as "GET /2/dm_events"')
    try:
        limit = Limit.from_json(body)
        request.app[STATE_KEY].set_rate_limit(endpoint, limit.limit, limit.window)
    except ValueError as error:
        raise bad_control_request(str(error)) from error
    return json_response({"endpoint": endpoint, **limit.to_json()})


async def _json_object(request: web.Request) -> Mapping[str, Any]:
    try:
        body = await read_json(request)
    except ValueError as error:
        raise bad_control_request(str(error)) from error
    if not isinstance(body, dict):
        raise bad_control_request("the body must be a JSON object")
    return body
