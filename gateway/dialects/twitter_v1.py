"""Twitter REST API v1.1, classic: ``POST direct_messages/destroy.json`` answers the deleted DM as JSON."""

from __future__ import annotations

from gateway.dialects.base import Dialect, LegacyRequest, LegacyResponse, RouteSpec
from gateway.model import DestroyDM, Operation, Outcome


class TwitterClassic(Dialect):
    name = "twitter_v1"
    mapping_name = "twitter_v1"
    routes = (RouteSpec(("POST",), "/direct_messages/destroy.json", "destroy", "json"),)

    def parse(self, operation: str, request: LegacyRequest) -> Operation:
        return DestroyDM(
            id=self.message_id(request),
            want_body=True,
            include_entities=request.flag("include_entities", default=True),
        )

    def render(self, op: Operation, outcome: Outcome, fmt: str) -> LegacyResponse:
        assert outcome.view is not None
        drop = () if op.include_entities else ("entities",)
        return self.render_message(outcome.view, fmt, outcome.rate_limit, drop=drop)
