"""Twitter API v1 and StatusNet / GNU social: the inbox (``direct_messages``), ``sent``, ``new`` and
``destroy``, each as ``.xml`` or ``.json``. Lists are ``<direct-messages type="array">`` in XML."""

from __future__ import annotations

from gateway.dialects.base import Dialect, LegacyRequest, LegacyResponse, RouteSpec
from gateway.errors import RecipientNotFound
from gateway.model import DestroyDM, Operation, Outcome

_DESTROY_METHODS = ("POST", "DELETE")
_FMT = "{fmt:xml|json}"


class StatusNet(Dialect):
    name = "statusnet"
    mapping_name = "statusnet"
    routes = (
        RouteSpec(("GET",), f"/direct_messages.{_FMT}", "received"),
        RouteSpec(("GET",), f"/direct_messages/sent.{_FMT}", "sent"),
        RouteSpec(("POST",), f"/direct_messages/new.{_FMT}", "new"),
        RouteSpec(_DESTROY_METHODS, f"/direct_messages/destroy/{{id}}.{_FMT}", "destroy"),
        RouteSpec(_DESTROY_METHODS, f"/direct_messages/destroy.{_FMT}", "destroy"),
    )

    def parse(self, operation: str, request: LegacyRequest) -> Operation:
        if operation in ("received", "sent"):
            return self.list_op(request, operation)
        if operation == "new":
            # StatusNet looked the recipient up first and answered "not found" when none was named.
            return self.form_send_op(request, missing_recipient=RecipientNotFound("no recipient named"))
        return DestroyDM(id=self.message_id(request), want_body=True)

    def render(self, op: Operation, outcome: Outcome, fmt: str) -> LegacyResponse:
        if outcome.view is None:
            return self.render_messages(outcome.views, fmt, outcome.rate_limit)
        return self.render_message(outcome.view, fmt, outcome.rate_limit)
