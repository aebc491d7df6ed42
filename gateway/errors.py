"""One exception hierarchy for the whole gateway.

Each error carries a neutral ``kind``; every dialect's mapping says which status, code and message that
kind becomes in its own error shape. Nothing here knows about JSON, XML or HTTP bodies.
"""

from __future__ import annotations

from gateway.model import RateLimit


class GatewayError(Exception):
    """Base class. ``detail`` is for operators (logs), never shown to clients verbatim."""

    kind = "internal"

    #: The request parameter the error is about, for messages that name it (``{parameter}`` in a mapping).
    parameter = ""

    def __init__(self, detail: str = "", *, rate_limit: RateLimit | None = None) -> None:
        super().__init__(detail or self.kind)
        self.detail = detail
        self.rate_limit = rate_limit


# Client-side problems, found before anything reaches upstream.
class MissingId(GatewayError):
    kind = "missing_id"


class InvalidId(GatewayError):
    kind = "invalid_id"


class RouteNotFound(GatewayError):
    kind = "route_not_found"


class MethodNotAllowed(GatewayError):
    kind = "method_not_allowed"

    def __init__(self, allowed: tuple[str, ...], detail: str = "") -> None:
        super().__init__(detail)
        self.allowed = allowed


class MissingParameter(GatewayError):
    """A required parameter other than the message id is absent."""

    kind = "missing_parameter"

    def __init__(self, parameter: str, detail: str = "") -> None:
        super().__init__(detail or f"no {parameter}")
        self.parameter = parameter


class InvalidParameter(GatewayError):
    """A parameter other than the message id that cannot be read (a malformed since_id, say)."""

    kind = "invalid_parameter"

    def __init__(self, parameter: str, detail: str = "") -> None:
        super().__init__(detail or f"malformed {parameter}")
        self.parameter = parameter


# Sending a message: each refusal has its own historic form in every dialect.
class EmptyText(GatewayError):
    kind = "empty_text"


class TextTooLong(GatewayError):
    kind = "text_too_long"


class InvalidMedia(GatewayError):
    """A send's attachment the gateway cannot carry to v2 as it is (a second one, a location, quick
    replies), or a media id v2 refused: nothing is sent, rather than the text without it."""

    kind = "invalid_media"


class RecipientNotFound(GatewayError):
    """No user with the id or screen name the sender named."""

    kind = "recipient_not_found"


class UserNotFound(GatewayError):
    """No user with the id or screen name a user lookup named."""

    kind = "user_not_found"


class NoUserMatches(GatewayError):
    """None of the users a lookup of several named exists (or it named none)."""

    kind = "no_user_matches"


class MessageToSelf(GatewayError):
    kind = "message_to_self"


class RecipientRefuses(GatewayError):
    """The recipient does not accept direct messages from the sender (v2 ``receives_your_dm`` is false)."""

    kind = "recipient_refuses"


class NotAuthenticated(GatewayError):
    """No credential the gateway could present upstream."""

    kind = "not_authenticated"


class BadRequest(GatewayError):
    """A request the gateway cannot read at all (a malformed form body, say)."""

    kind = "bad_request"


class BadAuthData(GatewayError):
    """Authentication data the gateway cannot even read: a malformed header, missing OAuth parameters."""

    kind = "bad_auth_data"


class TimestampOutOfBounds(GatewayError):
    """An OAuth 1.0a timestamp outside the accepted window."""

    kind = "timestamp_out_of_bounds"


class LoginsThrottled(GatewayError):
    """Too many failed logins from the caller's address or for the username: refused without checking,
    in the dialect's rate-limit words (the gateway's own limit, not the upstream's)."""

    kind = "rate_limited"


class PayloadTooLarge(GatewayError):
    kind = "payload_too_large"


class RequestTimeout(GatewayError):
    """The client did not send its whole request body within ``server.client_timeout``."""

    kind = "request_timeout"


# What the upstream said or failed to say.
class UpstreamError(GatewayError):
    kind = "upstream_failure"


class MessageNotFound(UpstreamError):
    kind = "message_not_found"


class InvalidToken(UpstreamError):
    """The upstream refused the credential (v2 401)."""

    kind = "invalid_token"


class Forbidden(UpstreamError):
    """The upstream refused the operation for this caller (v2 403)."""

    kind = "forbidden"


class RateLimited(UpstreamError):
    kind = "rate_limited"


class UpstreamUnavailable(UpstreamError):
    """Timeouts, resets, refused connections, 502/503/504: worth retrying later."""

    kind = "upstream_unavailable"


class UpstreamFailure(UpstreamError):
    """A 500, or an answer the gateway cannot make sense of."""

    kind = "upstream_failure"


class UpstreamBadRequest(UpstreamFailure):
    """v2 refused a request as malformed (400). Unexpected unless a caller's value reached v2 as it was
    (a pagination token), so it renders as an upstream failure unless the service says otherwise."""


class Internal(GatewayError):
    """Anything unexpected inside the gateway; the details go to the log, never to the client."""

    kind = "internal"


def _all_kinds() -> tuple[str, ...]:
    kinds: list[str] = []
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        cls = pending.pop()
        if cls.kind not in kinds:
            kinds.append(cls.kind)
        pending.extend(cls.__subclasses__())
    return tuple(sorted(kinds))


#: Every neutral kind; each dialect mapping must say how it renders each one.
ERROR_KINDS = _all_kinds()
