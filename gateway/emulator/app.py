"""The aiohttp application: routes plus the one middleware every request passes through.

For API requests the middleware plays X's front door in the order X does: note the request, apply any
injected fault, reject unknown routes, authenticate, count against the quota, then run the handler.
The OAuth 2.0 token endpoint and consent page and the OAuth 1.0a sign-in endpoints stop after the
routing check: their clients authenticate in the handlers and X does not meter them with v2's quotas.
Control requests skip all of that.
"""

from __future__ import annotations

import gzip
import re

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.emulator.auth import CALLER_KEY, authenticate
from gateway.emulator.consent import OAUTH2_PATHS, add_consent_routes
from gateway.emulator.control import CONTROL_PREFIX, add_control_routes
from gateway.emulator.faults import apply_fault, take_fault
from gateway.emulator.login import LOGIN_PATHS, add_login_routes
from gateway.emulator.problems import Problem, plain, too_many_requests, unauthorized
from gateway.emulator.seed import default_seed
from gateway.emulator.state import STATE_KEY, EmulatorState
from gateway.emulator.token_endpoint import TOKEN_PATH, add_token_route
from gateway.emulator.v2 import add_v2_routes

_PATH_PARAMETER = re.compile(r"\{(\w+)\}")


def create_app(state: EmulatorState | None = None) -> web.Application:
    """An emulator app over ``state``, or over a fresh state from the default seed."""
    app = web.Application(middlewares=[_emulator_middleware])
    app[STATE_KEY] = state if state is not None else EmulatorState.from_seed(default_seed())
    add_v2_routes(app.router)
    add_token_route(app.router)
    add_login_routes(app.router)
    add_consent_routes(app.router)
    add_control_routes(app.router)
    return app


@web.middleware
async def _emulator_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.path.startswith(CONTROL_PREFIX):
            _check_route(request)
            return await handler(request)
        response = await _api(request, handler, request.app[STATE_KEY])
    except Problem as problem:
        response = problem.response()
    if request.app[STATE_KEY].compress_responses:
        _gzip(request, response)
    return response


def _gzip(request: web.Request, response: web.StreamResponse) -> None:
    """Compress a JSON answer in place when the client accepts gzip (only with ``compress_responses``)."""
    accepted = {part.split(";")[0].strip().lower() for part in request.headers.get("Accept-Encoding", "").split(",")}
    if "gzip" not in accepted or not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return
    if not response.content_type.endswith("json") or "Content-Encoding" in response.headers:
        return
    response.body = gzip.compress(response.body, mtime=0)
    response.headers["Content-Encoding"] = "gzip"
    response.headers.add("Vary", "Accept-Encoding")


async def _api(request: web.Request, handler: Handler, state: EmulatorState) -> web.StreamResponse:
    state.record(request)
    rule = take_fault(state.faults, request.method, request.path)
    if rule is not None and (faulted := await apply_fault(rule, request)) is not None:
        return faulted
    _check_route(request)
    if request.path == TOKEN_PATH or request.path in LOGIN_PATHS or request.path in OAUTH2_PATHS:
        return await handler(request)
    caller = await authenticate(request, state)
    if caller is None:
        raise unauthorized()
    quota = state.limiter.hit(caller.credential, endpoint_of(request))
    quota_headers = quota.headers() if quota is not None else {}
    if quota is not None and quota.exceeded:
        return too_many_requests().response(quota_headers)
    request[CALLER_KEY] = caller
    try:
        response = await handler(request)
    except Problem as problem:
        response = problem.response()
    response.headers.update(quota_headers)
    return response


def endpoint_of(request: web.Request) -> str:
    """The rate-limit name of the matched route, in X's notation: ``DELETE /2/dm_events/:id``."""
    resource = request.match_info.route.resource
    pattern = resource.canonical if resource is not None else request.path
    return request.method + " " + _PATH_PARAMETER.sub(r":\1", pattern)


def _check_route(request: web.Request) -> None:
    """Turn aiohttp's routing failures (404, 405) into problem+json like every other error."""
    failure = request.match_info.http_exception
    if failure is None:
        return
    headers = None
    if isinstance(failure, web.HTTPMethodNotAllowed):
        headers = {"Allow": ",".join(sorted(failure.allowed_methods))}
    raise plain(failure.status, headers=headers)
