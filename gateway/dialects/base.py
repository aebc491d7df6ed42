"""What every dialect shares: the request and response values, id collection, flags, and error bodies."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from multidict import MultiDict, MultiMapping

from gateway.config import RenderConfig
from gateway.errors import (
    EmptyText,
    GatewayError,
    InvalidParameter,
    MissingParameter,
    NoUserMatches,
    RecipientNotFound,
    TextTooLong,
    UserNotFound,
)
from gateway.ids import is_id, parse_id
from gateway.model import (
    MAX_LOOKUP,
    MAX_TEXT,
    ListDMs,
    LookupUsers,
    MessageView,
    Operation,
    Outcome,
    RateLimit,
    SendDM,
    ShowUser,
    User,
)
from gateway.render.mapping import DialectMapping, load_mapping
from gateway.render.serialize import to_json, to_xml

JSON_TYPE = "application/json; charset=utf-8"
XML_TYPE = "application/xml; charset=utf-8"
JSONP_TYPE = "application/javascript; charset=utf-8"

#: How legacy APIs spelled a boolean parameter (include_entities, suppress_response_codes), any case.
TRUE_VALUES = frozenset({"true", "t", "1"})
FALSE_VALUES = frozenset({"false", "f", "0"})


#: Screen names as X allows them; anything else names nobody and never reaches v2.
_SCREEN_NAME = re.compile(r"@?([A-Za-z0-9_]{1,15})", re.ASCII)
#: A Host header as the site's server may be told it: a name or address, perhaps with a port.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?", re.ASCII)
#: A JSONP callback: a JavaScript identifier, or several joined by dots (``jQuery1234_5678``, ``app.got``),
#: ASCII only and at most 100 characters; nothing else is written before a body.
_CALLBACK = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)*", re.ASCII)
_CALLBACK_MAX = 100
#: Words a callback may not be, nor have as a part: ECMAScript's reserved words and literals.
_RESERVED = frozenset(
    "await break case catch class const continue debugger default delete do else enum export extends false "
    "finally for function if implements import in instanceof interface let new null package private protected "
    "public return static super switch this throw true try typeof var void while with yield".split()
)
#: Methods in the order a "requires a POST or DELETE" message names them.
_METHOD_ORDER = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(slots=True)
class LegacyRequest:
    """The parts of an HTTP request a dialect may look at, already read from the wire. ``json`` is the
    decoded body of a route that takes JSON (None otherwise, or when the body was not JSON).

    Made once per legacy call; not frozen, as it notes what the dialect asks for (``asked``)."""

    method: str
    path: str
    match: Mapping[str, str] = field(default_factory=dict)
    query: MultiMapping[str] = field(default_factory=MultiDict)
    form: MultiMapping[str] = field(default_factory=MultiDict)
    json: Any = None
    #: The names of the parameters the dialect asked for: what a call reads, for its documentation's test.
    asked: set[str] = field(default_factory=set)
    #: The host the client named (its ``Host``), for answers that tell a client where it reached the API.
    host: str = ""

    def all_values(self, name: str) -> list[str]:
        """A parameter from the path, the query string and the form body together."""
        self.asked.add(name)
        values = [self.match[name]] if name in self.match else []
        for source in (self.query, self.form):
            values.extend(source.getall(name, ()))
        return values

    def flag(self, name: str, default: bool) -> bool:
        """A legacy boolean: true/t/1 and false/f/0, any case; anything else keeps the default."""
        for value in self.all_values(name):
            lowered = value.strip().lower()
            if lowered in TRUE_VALUES:
                return True
            if lowered in FALSE_VALUES:
                return False
        return default

    def first(self, name: str) -> str | None:
        """The first value of a parameter from the path, query or form body, or None."""
        values = self.all_values(name)
        return values[0] if values else None

    def number(self, name: str, default: int, maximum: int) -> int:
        """A legacy count or page: digits, capped at ``maximum``; anything else (or below 1) is ``default``,
        as the classic APIs ignored what they could not read."""
        value = (self.first(name) or "").strip()
        if not (value.isascii() and value.isdigit()) or int(value) < 1:
            return default
        return min(int(value), maximum)

    def id_bound(self, name: str) -> int | None:
        """``since_id`` or ``max_id``: an id, or None when absent, empty or 0 (no bound, as the classic
        APIs read 0); anything else is refused before it reaches v2."""
        value = (self.first(name) or "").strip()
        if value in ("", "0"):
            return None
        if not is_id(value):
            raise InvalidParameter(name)
        return int(value)


@dataclass(frozen=True, slots=True)
class LegacyResponse:
    """Status, headers and body: the same object whether the body is JSON, XML or empty."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RouteSpec:
    methods: tuple[str, ...]
    path: str  # relative to the family prefix, in aiohttp's route syntax
    operation: str
    fmt: str | None = None  # fixed format, or None to take the route's {fmt}
    body: str = "form"  # what the request body carries: "form" parameters or one "json" document
    # Answered to anyone, as the historic API did: an answer about the service itself, the same for every
    # caller, that reads no credentials and asks v2 nothing.
    public: bool = False


class UnknownOperation(ValueError):
    """A route names an operation its dialect does not parse: a mistake in the code, found at start-up."""


class Dialect:
    name: ClassVar[str]
    mapping_name: ClassVar[str]
    routes: ClassVar[tuple[RouteSpec, ...]]
    #: Every operation ``parse`` names; each route's ``operation`` must be one of them.
    operations: ClassVar[frozenset[str]]

    #: Whether ``callback=NAME`` wraps this dialect's JSON answers as JSONP (``NAME(...)``).
    jsonp: ClassVar[bool] = False

    def __init__(self, render: RenderConfig | None = None) -> None:
        unknown = sorted({spec.operation for spec in self.routes} - self.operations)
        if unknown:
            raise UnknownOperation(f"{self.name}: routes name operations it does not parse: {', '.join(unknown)}")
        render = render or RenderConfig()
        self.mapping: DialectMapping = load_mapping(
            self.mapping_name, default_profile_image_url=render.default_profile_image_url
        )

    # Parsing -------------------------------------------------------------------------------------------

    def parse(self, operation: str, request: LegacyRequest) -> Operation:
        """The Operation a legacy call asks for; each dialect names every one of its ``operations``, and
        ends with ``raise self.unknown(operation)``, never with a default."""
        raise NotImplementedError

    def unknown(self, operation: str) -> UnknownOperation:
        return UnknownOperation(f"{self.name} has no operation {operation!r}")

    @staticmethod
    def message_id(request: LegacyRequest) -> str:
        return parse_id(request.all_values("id"))

    @staticmethod
    def list_op(request: LegacyRequest, box: str, *, page: bool = True, include_entities: bool = True) -> ListDMs:
        """A classic list (received or sent): ``count`` (20, at most 200), ``since_id``, ``max_id`` and,
        where the call had it, ``page``."""
        return ListDMs(
            box=box,
            count=request.number("count", 20, 200),
            since_id=request.id_bound("since_id"),
            max_id=request.id_bound("max_id"),
            page=request.number("page", 1, 2**31) if page else 1,
            include_entities=include_entities,
        )

    @classmethod
    def form_send_op(
        cls, request: LegacyRequest, *, missing_recipient: GatewayError | None = None, include_entities: bool = True
    ) -> SendDM:
        """A send from the parameters every form-based send took: ``text`` and ``user_id``, ``screen_name``
        or ``user``."""
        return cls.send_op(
            request,
            request.first("text"),
            user_id=request.first("user_id"),
            screen_name=request.first("screen_name"),
            user=request.first("user"),
            missing_recipient=missing_recipient,
            include_entities=include_entities,
        )

    @staticmethod
    def send_op(
        request: LegacyRequest,
        text: str | None,
        *,
        user_id: str | None = None,
        screen_name: str | None = None,
        user: str | None = None,
        missing_recipient: GatewayError | None = None,
        include_entities: bool = True,
    ) -> SendDM:
        """A send to ``user_id``, else ``screen_name``, else ``user`` (an id when all digits, else a screen
        name, as v1 and StatusNet read it). Text is checked first, as the legacy APIs did; a recipient that
        cannot exist is refused before v2 is asked."""
        text = text or ""
        if not text.strip():
            raise EmptyText("no text")
        if len(text) > MAX_TEXT:
            raise TextTooLong(f"{len(text)} characters")
        if user_id:
            if not is_id(user_id):
                raise InvalidParameter("user_id")
            return SendDM(text=text, recipient_id=user_id, include_entities=include_entities)
        if not screen_name and user:
            if user.isascii() and user.isdigit():
                if not is_id(user):
                    raise RecipientNotFound("user is not an id")
                return SendDM(text=text, recipient_id=user, include_entities=include_entities)
            screen_name = user
        if screen_name:
            match = _SCREEN_NAME.fullmatch(screen_name)
            if match is None:
                raise RecipientNotFound("not a screen name X allows")
            return SendDM(text=text, screen_name=match[1], include_entities=include_entities)
        raise missing_recipient or MissingParameter("user_id")

    @staticmethod
    def server(request: LegacyRequest) -> str:
        """The host the client reached the API at, when it is one a client could name; else empty."""
        return request.host if _HOST.fullmatch(request.host) else ""

    @staticmethod
    def show_user_op(request: LegacyRequest, *, statusnet_id: bool = False) -> ShowUser:
        """One user: StatusNet's ``id`` (when ``statusnet_id``; in the path or the query: an id when all
        digits, else a screen name), else ``user_id``, else ``screen_name``. A malformed ``user_id`` is
        refused; a screen name X would not allow, or no user named at all, is a user not found, all before
        v2 is asked."""
        by_id = request.first("id") if statusnet_id else None
        user_id, screen_name = request.first("user_id"), request.first("screen_name")
        unknown = UserNotFound("not a user X could have")
        if by_id:
            if by_id.isascii() and by_id.isdigit():
                if not is_id(by_id):
                    raise unknown
                return ShowUser(user_id=by_id)
            return ShowUser(screen_name=_screen_name(by_id, unknown))
        if user_id:
            if not is_id(user_id):
                raise InvalidParameter("user_id")
            return ShowUser(user_id=user_id)
        if screen_name:
            return ShowUser(screen_name=_screen_name(screen_name, unknown))
        raise UserNotFound("no user named")

    @staticmethod
    def lookup_op(request: LegacyRequest) -> LookupUsers:
        """Users by ``user_id`` and ``screen_name``, each a comma-separated list (and either given more than
        once), ``MAX_LOOKUP`` in all. A malformed id is refused; a screen name X would not allow names
        nobody and is left out; nobody named at all is no match, before v2 is asked."""
        ids: dict[str, None] = {}
        for value in request.all_values("user_id"):
            for item in value.split(","):
                item = item.strip()
                if not item:
                    continue
                if not is_id(item):
                    raise InvalidParameter("user_id")
                ids[item] = None
                if len(ids) > MAX_LOOKUP:
                    raise InvalidParameter("user_id", f"more than {MAX_LOOKUP} users")
        names: dict[str, str] = {}
        for value in request.all_values("screen_name"):
            for item in value.split(","):
                match = _SCREEN_NAME.fullmatch(item.strip())
                if match is not None:
                    names.setdefault(match[1].lower(), match[1])
                    if len(ids) + len(names) > MAX_LOOKUP:
                        raise InvalidParameter("screen_name", f"more than {MAX_LOOKUP} users")
        if not ids and not names:
            raise NoUserMatches("no user named")
        return LookupUsers(user_ids=tuple(ids), screen_names=tuple(names.values()))

    # Rendering -----------------------------------------------------------------------------------------

    def render_user(self, user: User, fmt: str, rate_limit: RateLimit | None) -> LegacyResponse:
        """One user, in the shape this dialect gives a message's sender: ``<user>`` in XML."""
        if fmt == "xml" and self.mapping.xml is not None:
            tree = self.mapping.xml.render("user", {"user": user})
            body, content_type = to_xml("user", tree, indent=self.mapping.xml_indent), XML_TYPE
        else:
            tree = self.mapping.json.render("user", {"user": user})
            body, content_type = to_json(tree, escape_slashes=self.mapping.json_escape_slashes), JSON_TYPE
        return LegacyResponse(200, body, content_type, self.rate_limit_headers(rate_limit))

    def render_users(self, users: tuple[User, ...], rate_limit: RateLimit | None) -> LegacyResponse:
        """Users as a JSON array."""
        trees = [self.mapping.json.render("user", {"user": user}) for user in users]
        body = to_json(trees, escape_slashes=self.mapping.json_escape_slashes)
        return LegacyResponse(200, body, JSON_TYPE, self.rate_limit_headers(rate_limit))

    def render_document(self, template: str, root: str, context: dict[str, Any], fmt: str) -> LegacyResponse:
        """A template of this dialect's mapping on its own: ``<root>`` in XML."""
        if fmt == "xml" and self.mapping.xml is not None:
            tree = self.mapping.xml.render(template, context)
            return LegacyResponse(200, to_xml(root, tree, indent=self.mapping.xml_indent), XML_TYPE)
        tree = self.mapping.json.render(template, context)
        return LegacyResponse(200, to_json(tree, escape_slashes=self.mapping.json_escape_slashes), JSON_TYPE)

    def render_scalar(self, root: str, value: str, fmt: str) -> LegacyResponse:
        """One value: a JSON string, or ``<root>value</root>``."""
        if fmt == "xml" and self.mapping.xml is not None:
            return LegacyResponse(200, to_xml(root, {"#text": value}, indent=self.mapping.xml_indent), XML_TYPE)
        return LegacyResponse(200, to_json(value), JSON_TYPE)

    def render(self, op: Operation, outcome: Outcome, fmt: str) -> LegacyResponse:
        raise NotImplementedError

    def render_message(
        self, view: MessageView, fmt: str, rate_limit: RateLimit | None, *, drop: tuple[str, ...] = ()
    ) -> LegacyResponse:
        if fmt == "xml" and self.mapping.xml is not None:
            tree = self.mapping.xml.render("direct_message", _context(view))
            body, content_type = to_xml("direct_message", tree, indent=self.mapping.xml_indent), XML_TYPE
        else:
            tree = self.message_tree(view, "direct_message", drop)
            body, content_type = to_json(tree, escape_slashes=self.mapping.json_escape_slashes), JSON_TYPE
        return LegacyResponse(200, body, content_type, self.rate_limit_headers(rate_limit))

    def render_messages(
        self, views: tuple[MessageView, ...], fmt: str, rate_limit: RateLimit | None, *, drop: tuple[str, ...] = ()
    ) -> LegacyResponse:
        """A list of messages: a JSON array, or ``<direct-messages type="array">`` in XML."""
        if fmt == "xml" and self.mapping.xml is not None:
            items = [self.mapping.xml.render_kept("direct_message", _context(view)) for view in views]
            tree: dict[str, Any] = {"@type": "array"}
            if items:
                tree["direct_message"] = items
            body, content_type = to_xml("direct-messages", tree, indent=self.mapping.xml_indent), XML_TYPE
        else:
            trees = [self.message_tree(view, "direct_message", drop, kept=True) for view in views]
            body, content_type = to_json(trees, escape_slashes=self.mapping.json_escape_slashes), JSON_TYPE
        return LegacyResponse(200, body, content_type, self.rate_limit_headers(rate_limit))

    def message_tree(
        self, view: MessageView, template: str, drop: tuple[str, ...] = (), *, kept: bool = False
    ) -> dict[str, Any]:
        """One message rendered with a JSON template of this dialect, with its attachment (the mapping's
        ``media`` template, placed by ``attach``), without the top-level keys in ``drop``. With ``kept`` (a
        list's message), rendered as the renderer keeps it for the very same view (``Renderer.render_kept``)."""
        renderer = self.mapping.json
        tree = (renderer.render_kept if kept else renderer.render)(template, _context(view))
        attachment = view.message.attachment
        if attachment is not None and "media" in renderer.templates:
            tree = self.attach(dict(tree), renderer.render_object("media", attachment))
        if drop:
            tree = {key: value for key, value in tree.items() if key not in drop}
        return tree

    def attach(self, tree: dict[str, Any], media: dict[str, Any]) -> dict[str, Any]:
        """A message's tree with its media attachment: ``entities.media``, as Twitter v1 wrote a picture."""
        tree["entities"] = {**(tree.get("entities") or {}), "media": [media]}
        return tree

    def rate_limit_headers(self, rate_limit: RateLimit | None) -> tuple[tuple[str, str], ...]:
        if rate_limit is None:
            return ()
        names = self.mapping.rate_limit_headers
        return (
            (names.limit, str(rate_limit.limit)),
            (names.remaining, str(rate_limit.remaining)),
            (names.reset, str(rate_limit.reset)),
        )

    def render_error(self, error: GatewayError, fmt: str, path: str, *, suppress: bool = False) -> LegacyResponse:
        """The error in this dialect's shape. ``suppress`` answers 200, as suppress_response_codes did."""
        spec = self.mapping.errors[error.kind]
        message = _error_message(spec.message, error)
        as_xml = fmt == "xml" and self.mapping.xml is not None
        tree: dict[str, Any]
        if self.mapping.error_style == "twitter":
            if as_xml:
                tree = {"error": {"@code": str(spec.code), "#text": message}}
                body = to_xml("errors", tree, indent=self.mapping.xml_indent)
            else:
                body = to_json({"errors": [{"code": spec.code, "message": message}]})
        else:
            tree = {"error": message, "request": path}
            if as_xml:
                body = to_xml("hash", tree, indent=self.mapping.xml_indent)
            else:
                body = to_json(tree, escape_slashes=self.mapping.json_escape_slashes)
        headers = list(self.rate_limit_headers(error.rate_limit))
        if spec.status == 401 and self.mapping.www_authenticate:
            headers.append(("WWW-Authenticate", self.mapping.www_authenticate))
        status = 200 if suppress else spec.status
        return LegacyResponse(status, body, XML_TYPE if as_xml else JSON_TYPE, tuple(headers))

    def error_format(self, path: str) -> str:
        """The format an error is rendered in when no route matched: the path's extension decides."""
        return "xml" if path.endswith(".xml") and self.mapping.xml is not None else "json"


def jsonp_callback(values: list[str]) -> str | None:
    """The JSONP callback the ``callback`` parameter names (its first value), or None when it is absent or
    empty; anything but a JavaScript name (see ``_CALLBACK``) is an invalid parameter."""
    if not values or not values[0]:
        return None
    name = values[0]
    if (
        len(name) > _CALLBACK_MAX
        or _CALLBACK.fullmatch(name) is None
        or any(part in _RESERVED for part in name.split("."))
    ):
        raise InvalidParameter("callback")
    return name


def _screen_name(value: str, unknown: GatewayError) -> str:
    """A screen name as X allows them (an ``@`` before it is dropped), or ``unknown`` raised."""
    match = _SCREEN_NAME.fullmatch(value.strip())
    if match is None:
        raise unknown
    return match[1]


def _context(view: MessageView) -> dict[str, Any]:
    return {"message": view.message, "sender": view.sender, "recipient": view.recipient}


def _error_message(template: str, error: GatewayError) -> str:
    """A mapping's message with ``{parameter}`` (the parameter at fault) and ``{allowed}`` (the methods a
    route takes, as "POST or DELETE") filled in."""
    allowed = sorted(getattr(error, "allowed", ()), key=lambda m: (*_METHOD_ORDER, m).index(m))
    return template.replace("{parameter}", error.parameter).replace("{allowed}", " or ".join(allowed))
