"""Twitter REST API v1.1, DM events: ``DELETE direct_messages/events/destroy.json?id=`` answers 204, no body."""

from __future__ import annotations

from gateway.dialects.base import Dialect, LegacyRequest, LegacyResponse, RouteSpec
from gateway.model import DestroyDM, Operation, Outcome


class TwitterEvents(Dialect):
    name = "twitter_events"
    mapping_name = "twitter_events"
    routes = (RouteSpec(("DELETE",), "/direct_messages/events/destroy.json", "destroy", "json"),)

    def parse(self, operation: str, request: LegacyRequest) -> Operation:
        # No body is answered, so the gateway need not look the message up before deleting it.
        return DestroyDM(id=self.message_id(request), want_body=False)

    def render(self, op: Operation, outcome: Outcome, fmt: str) -> LegacyResponse:
        return LegacyResponse(204, headers=self.rate_limit_headers(outcome.rate_limit))
