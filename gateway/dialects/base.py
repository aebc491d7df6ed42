"""What every dialect shares: the request and response values, id collection, flags, and error bodies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from multidict import MultiMapping

from gateway.errors import GatewayError
from gateway.ids import parse_id
from gateway.model import MessageView, Operation, Outcome, RateLimit
from gateway.render.mapping import DialectMapping, load_mapping
from gateway.render.serialize import to_json, to_xml

JSON_TYPE = "application/json; charset=utf-8"
XML_TYPE = "application/xml; charset=utf-8"

#: How legacy APIs spelled a boolean parameter (include_entities, suppress_response_codes), any case.
TRUE_VALUES = frozenset({"true", "t", "1"})
FALSE_VALUES = frozenset({"false", "f", "0"})


@dataclass(frozen=True, slots=True)
class LegacyRequest:
    """The parts of an HTTP request a dialect may look at, already read from the wire."""

    method: str
    path: str
    match: Mapping[str, str] = field(default_factory=dict)
    query: MultiMapping[str] = field(default_factory=dict)  # type: ignore[assignment]
    form: MultiMapping[str] = field(default_factory=dict)  # type: ignore[assignment]

    def all_values(self, name: str) -> list[str]:
        """A parameter from the path, the query string and the form body together."""
        values = [self.match[name]] if name in self.match else []
        for source in (self.query, self.form):
            values.extend(source.getall(name, ()))  # type: ignore[attr-defined]
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


class Dialect:
    name: ClassVar[str]
    mapping_name: ClassVar[str]
    routes: ClassVar[tuple[RouteSpec, ...]]

    def __init__(self) -> None:
        self.mapping: DialectMapping = load_mapping(self.mapping_name)

    # Parsing -------------------------------------------------------------------------------------------

    def parse(self, operation: str, request: LegacyRequest) -> Operation:
        raise NotImplementedError

    @staticmethod
    def message_id(request: LegacyRequest) -> str:
        return parse_id(request.all_values("id"))

    # Rendering -----------------------------------------------------------------------------------------

    def render(self, op: Operation, outcome: Outcome, fmt: str) -> LegacyResponse:
        raise NotImplementedError

    def render_message(
        self, view: MessageView, fmt: str, rate_limit: RateLimit | None, *, drop: tuple[str, ...] = ()
    ) -> LegacyResponse:
        context = {"message": view.message, "sender": view.sender, "recipient": view.recipient}
        if fmt == "xml" and self.mapping.xml is not None:
            tree = self.mapping.xml.render("direct_message", context)
            body, content_type = to_xml("direct_message", tree, indent=self.mapping.xml_indent), XML_TYPE
        else:
            tree = self.mapping.json.render("direct_message", context)
            for key in drop:
                tree.pop(key, None)
            body, content_type = to_json(tree, escape_slashes=self.mapping.json_escape_slashes), JSON_TYPE
        return LegacyResponse(200, body, content_type, self.rate_limit_headers(rate_limit))

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
        as_xml = fmt == "xml" and self.mapping.xml is not None
        tree: dict[str, Any]
        if self.mapping.error_style == "twitter":
            if as_xml:
                tree = {"error": {"@code": str(spec.code), "#text": spec.message}}
                body = to_xml("errors", tree, indent=self.mapping.xml_indent)
            else:
                body = to_json({"errors": [{"code": spec.code, "message": spec.message}]})
        else:
            tree = {"error": spec.message, "request": path}
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
