"""Twitter API v1 and StatusNet / GNU social: the inbox (``direct_messages``), ``sent``, ``new`` and
``destroy``, each as ``.xml`` or ``.json``. Lists are ``<direct-messages type="array">`` in XML; a JSON answer
is JSONP with ``callback=NAME`` (the wrapping is done in ``gateway.app``, around errors too). And the calls
a client makes as it starts: ``account/verify_credentials``, ``users/show``, ``help/test``, and StatusNet's
``statusnet/config`` and ``statusnet/version``."""

from __future__ import annotations

from gateway.dialects.base import Dialect, LegacyRequest, LegacyResponse, RouteSpec
from gateway.errors import RecipientNotFound
from gateway.model import DestroyDM, Operation, Outcome, ServiceInfo, VerifyCredentials

_DESTROY_METHODS = ("POST", "DELETE")
_FMT = "{fmt:xml|json}"

#: The StatusNet release whose API this dialect speaks (0.9.7, the last of the 0.9 series, whose
#: documentation its shapes follow); ``statusnet/version`` answers it.
STATUSNET_VERSION = "0.9.7"


class StatusNet(Dialect):
    name = "statusnet"
    mapping_name = "statusnet"
    # StatusNet wrapped a JSON answer, errors included, in the function ``callback`` named (JSONP, for
    # clients in a browser); Twitter v1 did too, and these are its paths.
    jsonp = True
    routes = (
        RouteSpec(("GET",), f"/direct_messages.{_FMT}", "received"),
        RouteSpec(("GET",), f"/direct_messages/sent.{_FMT}", "sent"),
        RouteSpec(("POST",), f"/direct_messages/new.{_FMT}", "new"),
        RouteSpec(_DESTROY_METHODS, f"/direct_messages/destroy/{{id}}.{_FMT}", "destroy"),
        RouteSpec(_DESTROY_METHODS, f"/direct_messages/destroy.{_FMT}", "destroy"),
        RouteSpec(("GET",), f"/account/verify_credentials.{_FMT}", "verify_credentials"),
        RouteSpec(("GET",), f"/users/show.{_FMT}", "users_show"),
        RouteSpec(("GET",), f"/users/show/{{id}}.{_FMT}", "users_show"),
        RouteSpec(("GET",), f"/help/test.{_FMT}", "test", public=True),
        RouteSpec(("GET",), f"/statusnet/config.{_FMT}", "config", public=True),
        RouteSpec(("GET",), f"/statusnet/version.{_FMT}", "version", public=True),
    )
    operations = frozenset(
        ("received", "sent", "new", "destroy", "verify_credentials", "users_show", "test", "config", "version")
    )

    def parse(self, operation: str, request: LegacyRequest) -> Operation:
        if operation in ("received", "sent"):
            return self.list_op(request, operation)
        if operation == "new":
            # StatusNet looked the recipient up first and answered "not found" when none was named.
            return self.form_send_op(request, missing_recipient=RecipientNotFound("no recipient named"))
        if operation == "destroy":
            return DestroyDM(id=self.message_id(request), want_body=True)
        if operation == "verify_credentials":
            return VerifyCredentials()
        if operation == "users_show":
            # StatusNet's id (in the path or the query) names a user by id or nickname; then user_id, screen_name.
            return self.show_user_op(request, statusnet_id=True)
        if operation == "config":
            return ServiceInfo("config", server=self.server(request), path=_site_path(request.path))
        if operation in ("test", "version"):
            return ServiceInfo(operation)
        raise self.unknown(operation)

    def render(self, op: Operation, outcome: Outcome, fmt: str) -> LegacyResponse:
        if outcome.users:
            return self.render_user(outcome.users[0], fmt, outcome.rate_limit)
        if isinstance(op, ServiceInfo):
            if op.topic == "config":
                return self.render_document("config", "config", {"site": op}, fmt)
            if op.topic == "version":
                return self.render_scalar("version", STATUSNET_VERSION, fmt)
            return self.render_scalar("ok", "true" if fmt == "xml" else "ok", fmt)  # <ok>true</ok>, "ok"
        if outcome.view is None:
            return self.render_messages(outcome.views, fmt, outcome.rate_limit)
        return self.render_message(outcome.view, fmt, outcome.rate_limit)


def _site_path(path: str) -> str:
    """StatusNet's site path: where the site is installed below the server, the API root being
    ``/{path}/api``: the route's prefix without a last ``api`` or ``1`` and without its slashes."""
    prefix = path.rsplit("/statusnet/", 1)[0].strip("/")
    head, _, last = prefix.rpartition("/")
    return head if last in ("api", "1") else prefix
