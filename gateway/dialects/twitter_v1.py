"""Twitter REST API v1.1, classic direct messages: list received and sent, show, send and destroy, as JSON.

Every call answers direct message objects (``GET`` lists as a JSON array); ``include_entities=false`` leaves
their ``entities`` out.
"""

from __future__ import annotations

from gateway.dialects.base import Dialect, LegacyRequest, LegacyResponse, RouteSpec
from gateway.model import DestroyDM, Operation, Outcome, ShowDM


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
    )

    def parse(self, operation: str, request: LegacyRequest) -> Operation:
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
        return DestroyDM(id=self.message_id(request), want_body=True, include_entities=include_entities)

    def render(self, op: Operation, outcome: Outcome, fmt: str) -> LegacyResponse:
        drop = () if getattr(op, "include_entities", True) else ("entities",)
        if outcome.view is None:
            return self.render_messages(outcome.views, fmt, outcome.rate_limit, drop=drop)
        return self.render_message(outcome.view, fmt, outcome.rate_limit, drop=drop)
