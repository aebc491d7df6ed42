"""Every route of every dialect names an operation its ``parse`` names; a mistyped one fails at start-up."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from gateway.dialects import FAMILIES, Dialect, LegacyRequest, RouteSpec
from gateway.dialects.base import UnknownOperation
from gateway.errors import GatewayError
from gateway.model import DestroyDM

DIALECTS = [dialect for family in FAMILIES.values() for dialect in family]


def request() -> LegacyRequest:
    match = {"id": "1583890000000000003", "fmt": "json"}
    return LegacyRequest("POST", "/1.1/direct_messages/destroy.json", match, MultiDict(), MultiDict())


@pytest.mark.parametrize("dialect_class", DIALECTS, ids=lambda dialect: dialect.name)
def test_a_mistyped_route_operation_fails_at_construction(dialect_class: type[Dialect]) -> None:
    class Mistyped(dialect_class):  # type: ignore[misc, valid-type]
        routes = (*dialect_class.routes, RouteSpec(("POST",), "/direct_messages/destory.json", "destory"))

    with pytest.raises(UnknownOperation, match="destory"):
        Mistyped()


@pytest.mark.parametrize("dialect_class", DIALECTS, ids=lambda dialect: dialect.name)
def test_parse_refuses_an_operation_it_does_not_name(dialect_class: type[Dialect]) -> None:
    dialect = dialect_class()
    with pytest.raises(UnknownOperation, match="destory"):
        dialect.parse("destory", request())


@pytest.mark.parametrize("dialect_class", DIALECTS, ids=lambda dialect: dialect.name)
def test_every_declared_operation_is_parsed(dialect_class: type[Dialect]) -> None:
    """What ``operations`` declares is what ``parse`` names: each parses (or refuses the request's
    parameters in the dialect's own terms), and only ``destroy`` becomes a deletion."""
    dialect = dialect_class()
    for operation in dialect.operations:
        try:
            op = dialect.parse(operation, request())
        except GatewayError:
            continue
        assert isinstance(op, DestroyDM) == (operation == "destroy"), operation
