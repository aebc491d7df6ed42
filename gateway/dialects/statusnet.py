"""Twitter API v1 and StatusNet / GNU social: ``destroy/ID.xml|json`` and ``destroy.xml|json?id=``,
by POST or DELETE, answer the deleted DM as XML or JSON."""

from __future__ import annotations

from gateway.dialects.base import Dialect, LegacyRequest, LegacyResponse, RouteSpec
from gateway.model import DestroyDM, Operation, Outcome

_METHODS = ("POST", "DELETE")


class StatusNet(Dialect):
    name = "statusnet"
    mapping_name = "statusnet"
    routes = (
        RouteSpec(_METHODS, "/direct_messages/destroy/{id}.{fmt:xml|json}", "destroy"),
        RouteSpec(_METHODS, "/direct_messages/destroy.{fmt:xml|json}", "destroy"),
    )

    def parse(self, operation: str, request: LegacyRequest) -> Operation:
        return DestroyDM(id=self.message_id(request), want_body=True)

    def render(self, op: Operation, outcome: Outcome, fmt: str) -> LegacyResponse:
        assert outcome.view is not None
        return self.render_message(outcome.view, fmt, outcome.rate_limit)
