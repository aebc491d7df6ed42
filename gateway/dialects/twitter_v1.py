"""Twitter REST API v1.1, classic direct messages: list received and sent, show, send and destroy, as JSON;
and the calls a client makes as it starts: who am I, users, the service's configuration and quotas.

Every message call answers direct message objects (``GET`` lists as a JSON array); ``include_entities=false``
leaves their ``entities`` out. User calls answer user objects in the shape of a message's sender.
"""

from __future__ import annotations

from typing import Any

from gateway.dialects.base import JSON_TYPE, Dialect, LegacyRequest, LegacyResponse, RouteSpec
from gateway.model import (
    DestroyDM,
    LookupUsers,
    Operation,
    Outcome,
    RateLimitStatus,
    ServiceInfo,
    ShowDM,
    VerifyCredentials,
)
from gateway.render.serialize import to_json

#: ``rate_limit_status``: each family of resources, each resource in it with the v2 endpoint it is served by.
RATE_LIMIT_RESOURCES: dict[str, dict[str, str]] = {
    "account": {"/account/verify_credentials": "GET /2/users/me"},
    "direct_messages": {
        "/direct_messages": "GET /2/dm_events",
        "/direct_messages/events/list": "GET /2/dm_events",
        "/direct_messages/events/show": "GET /2/dm_events/:id",
        "/direct_messages/sent": "GET /2/dm_events",
        "/direct_messages/show": "GET /2/dm_events/:id",
    },
    "users": {"/users/lookup": "GET /2/users", "/users/show/:id": "GET /2/users/:id"},
}


class TwitterClassic(Dialect):
    name = "twitter_v1"
    mapping_name = "twitter_v1"
    routes = (
        RouteSpec(("GET",), "/direct_messages.json", "received", "json"),
        RouteSpec(("GET",), "/direct_messages/sent.json", "sent", "json"),
        RouteSpec(("GET",), "/direct_messages/show.json", "show", "json"),
        RouteSpec(("GET",), "/direct_messages/show/{id}.json", "show", "json"),  # as v1 and tweepy 3.x call it
        RouteSpec(("POST",), "/direct_messages/new.json", "new", "json"),
        RouteSpec(("POST",), "/direct_messages/destroy.json", "destroy", "json"),
        # The path form of the twitter_oauth Ruby gem and Python twitter's ``_id`` style.
        RouteSpec(("POST", "DELETE"), "/direct_messages/destroy/{id}.json", "destroy", "json"),
        RouteSpec(("GET",), "/account/verify_credentials.json", "verify_credentials", "json"),
        RouteSpec(("GET",), "/users/show.json", "users_show", "json"),
        RouteSpec(("GET", "POST"), "/users/lookup.json", "users_lookup", "json"),
        RouteSpec(("GET",), "/help/configuration.json", "configuration", "json"),
        RouteSpec(("GET",), "/application/rate_limit_status.json", "rate_limit_status", "json"),
    )
    operations = frozenset(
        (
            "received", "sent", "show", "new", "destroy",
            "verify_credentials", "users_show", "users_lookup", "configuration", "rate_limit_status",
        )
    )  # fmt: skip

    def parse(self, operation: str, request: LegacyRequest) -> Operation:
        if operation == "verify_credentials":
            # include_entities, skip_status and include_email change nothing: no status, entities or email.
            return VerifyCredentials()
        if operation == "users_show":
            return self.show_user_op(request)
        if operation == "users_lookup":
            return self.lookup_op(request)
        if operation == "configuration":
            return ServiceInfo("configuration")
        if operation == "rate_limit_status":
            return RateLimitStatus(_endpoints(_families(request)))
        include_entities = request.flag("include_entities", default=True)
        if operation == "received":
            # skip_status is accepted: the user objects of a direct message never carry a status here.
            return self.list_op(request, "received", page=False, include_entities=include_entities)
        if operation == "sent":
            return self.list_op(request, "sent", include_entities=include_entities)
        if operation == "show":
            return ShowDM(id=self.message_id(request), include_entities=include_entities)
        if operation == "new":
            return self.form_send_op(request, include_entities=include_entities)
        if operation == "destroy":
            return DestroyDM(id=self.message_id(request), want_body=True, include_entities=include_entities)
        raise self.unknown(operation)

    def render(self, op: Operation, outcome: Outcome, fmt: str) -> LegacyResponse:
        if isinstance(op, LookupUsers):
            return self.render_users(outcome.users, outcome.rate_limit)
        if outcome.users:
            return self.render_user(outcome.users[0], fmt, outcome.rate_limit)
        if isinstance(op, ServiceInfo):
            return self.render_document("configuration", "configuration", {}, fmt)
        if isinstance(op, RateLimitStatus):
            return _rate_limit_status(outcome)
        drop = () if getattr(op, "include_entities", True) else ("entities",)
        if outcome.view is None:
            return self.render_messages(outcome.views, fmt, outcome.rate_limit, drop=drop)
        return self.render_message(outcome.view, fmt, outcome.rate_limit, drop=drop)


def _families(request: LegacyRequest) -> tuple[str, ...]:
    """The families ``resources`` names (comma-separated), in the order known here; every family when it is
    absent or empty. Names this gateway does not serve are left out, as v1.1 left out names it did not know."""
    asked = {name.strip() for value in request.all_values("resources") for name in value.split(",")}
    asked.discard("")
    return tuple(family for family in RATE_LIMIT_RESOURCES if not asked or family in asked)


def _endpoints(families: tuple[str, ...]) -> tuple[str, ...]:
    endpoints = (endpoint for family in families for endpoint in RATE_LIMIT_RESOURCES[family].values())
    return tuple(dict.fromkeys(endpoints))


def _rate_limit_status(outcome: Outcome) -> LegacyResponse:
    """``{"rate_limit_context": {...}, "resources": {family: {resource: {limit, remaining, reset}}}}``, a
    family for each whose endpoints the outcome has quotas for."""
    quotas = dict(outcome.quotas)
    resources: dict[str, Any] = {}
    for family, members in RATE_LIMIT_RESOURCES.items():
        if all(endpoint in quotas for endpoint in members.values()):
            resources[family] = {
                resource: {
                    "limit": quotas[endpoint].limit,
                    "remaining": quotas[endpoint].remaining,
                    "reset": quotas[endpoint].reset,
                }
                for resource, endpoint in members.items()
            }
    tree = {"rate_limit_context": {"access_token": outcome.caller}, "resources": resources}
    return LegacyResponse(200, to_json(tree), JSON_TYPE)
