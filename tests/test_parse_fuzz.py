"""Whatever a client sends, parsing a legacy call either yields a well-formed operation or raises one of the
gateway's own errors: never another exception (a 500), and never a value v2 could be confused by."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from gateway.config import load_config
from gateway.dialects.base import LegacyRequest
from gateway.errors import GatewayError
from gateway.ids import is_id
from gateway.model import MAX_LOOKUP, MAX_TEXT, ListDMs, ListEvents, LookupUsers, SendDM, ShowDM, ShowUser
from gateway.router import DialectRouter

MOUNTS = [(prefix, dialect, spec) for prefix, dialect, spec in DialectRouter(load_config(env={})).mounts]
NAMES = (
    "id", "count", "page", "since_id", "max_id", "text", "user_id", "screen_name", "user", "cursor", "include_entities",
    "resources",
)  # fmt: skip
SCREEN_NAME = re.compile(r"[A-Za-z0-9_]{1,15}", re.ASCII)

hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["0", "-1", "1e3", "٣", " 5", "5 ", "99999999999999999999", "@", "@@x", "a" * 16, "../2/users", ""]
    ),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.integers(min_value=0, max_value=1000).map(str),
    st.integers(min_value=0, max_value=2**63 + 10).map(str),
)


def _check(op: Any) -> None:
    if isinstance(op, ListDMs):
        assert 1 <= op.count <= 200 and op.page >= 1
        for bound in (op.since_id, op.max_id):
            assert bound is None or is_id(str(bound))
    elif isinstance(op, ListEvents):
        assert 1 <= op.count <= 50
        assert op.cursor is None or (op.cursor.isascii() and op.cursor.isprintable() and len(op.cursor) <= 256)
    elif isinstance(op, SendDM):
        assert op.text.strip() and len(op.text) <= MAX_TEXT
        assert (op.recipient_id is None) != (op.screen_name is None)
        if op.recipient_id is not None:
            assert is_id(op.recipient_id)
        else:
            assert op.screen_name is not None and op.screen_name.isascii() and 1 <= len(op.screen_name) <= 15
            assert op.screen_name.replace("_", "").isalnum()
    elif isinstance(op, ShowDM):
        assert is_id(op.id)
    elif isinstance(op, ShowUser):
        assert (op.user_id is None) != (op.screen_name is None)
        assert is_id(op.user_id) if op.user_id is not None else SCREEN_NAME.fullmatch(op.screen_name or "")
    elif isinstance(op, LookupUsers):
        assert 1 <= len(op.user_ids) + len(op.screen_names) <= MAX_LOOKUP
        assert all(is_id(user_id) for user_id in op.user_ids)
        assert all(SCREEN_NAME.fullmatch(name) for name in op.screen_names)


@settings(max_examples=200, deadline=None)
@given(
    mount=st.sampled_from(MOUNTS),
    params=st.dictionaries(st.sampled_from(NAMES), hostile_text, max_size=6),
    document=st.builds(
        lambda kind, recipient, text: {
            "event": {
                "type": kind,
                "message_create": {"target": {"recipient_id": recipient}, "message_data": {"text": text}},
            }
        },
        st.sampled_from(["message_create", "Message_Create", ""]),
        hostile_text | st.integers(),
        hostile_text | st.none() | st.integers(),
    )
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=12),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["event", "type", "message_create", "target", "recipient_id", "message_data", "text"]),
                inner,
                max_size=4,
            )
        ),
        max_leaves=12,
    ),
)
def test_parsing_never_fails_but_with_a_gateway_error(mount: Any, params: dict[str, str], document: Any) -> None:
    _, dialect, spec = mount
    match = {"id": params.get("id", "")} if "{id}" in spec.path else {}
    request = LegacyRequest(spec.methods[0], spec.path, match, MultiDict(params), MultiDict(), document)
    try:
        op = dialect.parse(spec.operation, request)
    except GatewayError as error:
        assert error.kind in dialect.mapping.errors
        dialect.render_error(error, "json", spec.path)  # every refusal renders
        return
    _check(op)
