"""The fast paths of rendering against the straightforward ones: an XML document written in cached pieces is
the document written in one go."""

from __future__ import annotations

import re
from typing import Any

import pytest
import xmltodict
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.render import serialize
from gateway.render.serialize import to_xml

# XML documents in pieces ---------------------------------------------------------------------------------

_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _prepared(value: Any) -> Any:
    """The tree as XML gets it, written out independently of the serializer."""
    if value is None:
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict):
        return {key: _prepared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_prepared(item) for item in value]
    return _NOT_XML_CHAR.sub("", str(value))


def plain_xml(root: str, tree: dict[str, Any], indent: str = " ") -> bytes:
    """The whole document written by one call of the XML writer."""
    document = {root: _prepared(tree)}
    text = xmltodict.unparse(document, pretty=True, indent=indent, short_empty_elements=True, encoding="UTF-8")
    return text.replace("\r", "&#13;").encode("utf-8") + b"\n"


def outcome(render: Any, *args: Any, **kwargs: Any) -> Any:
    """What a render gives: its bytes, or the kind of error it raises."""
    try:
        return render(*args, **kwargs)
    except ValueError:
        return ValueError


# Few names and texts, so that subtrees repeat within and across examples and the caches are hit.
_names = st.sampled_from(["a", "b", "x", "user", "sender", "direct_message", "é", "a-b", "a:b"])
_bad_names = st.sampled_from(["", "a b", "<a>", "?a", "a/b", "a=b", "a\tb"])
_texts = st.sampled_from(["", " ", "1", "true", "x", "<b>&amp;</b>", "a\rb", "\r\n", "a\x00b", "\x07", "]]>", "😀", "\ud800", "'\""])
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), st.floats(allow_nan=False, width=16), _texts, st.text(max_size=8),
)
_keys = st.one_of(
    _names, _names.map(lambda n: "@" + n), st.just("#text"), st.just("#comment"), _bad_names,
    _bad_names.map(lambda n: "@" + n),
)  # fmt: skip


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=5))


_values = st.recursive(_scalars, _containers, max_leaves=30)
_trees = st.dictionaries(_keys, _values, max_size=6)
_indents = st.sampled_from([" ", "  ", "\t", ""])

USER = {"id": "1", "name": "Ann", "location": None, "protected": True, "followers_count": 0, "lang": "en"}


@settings(max_examples=500)
@given(root=_names, tree=_trees, indent=_indents)
@example(root="r", tree={"u": {"a": "1"}, "v": [{"a": "1"}]}, indent=" ")
@example(root="r", tree={"u": [{"a": "1"}], "v": {"a": "1"}}, indent=" ")
@example(root="r", tree={"u": {"a": ["1"]}, "v": {"a": "1"}}, indent=" ")
@example(root="r", tree={"u": {"a": 1}, "v": {"a": True}, "w": {"a": "1"}, "z": {"a": 1.0}}, indent=" ")
@example(root="r", tree={"@t": "array", "#text": "x\r", "m": [{"u": USER}, None, "s", [], {"u": USER}]}, indent="  ")
@example(root="r", tree={"m": [{"@a": "1"}, {}, {"#text": "t"}, {"u": {}}]}, indent=" ")
@example(root="r", tree={"a": [], "#comment": None}, indent=" ")
@example(root="r", tree={"a": [[{"b": "1"}], {"b": "1"}]}, indent=" ")
@example(root="r", tree={"#comment": [{"a": "b"}], "x": {"#comment": {"a": "b"}}}, indent=" ")
@example(root="r", tree={"x": None, "y": {"x": None}}, indent=" ")
@example(root="r", tree={"u": USER, "@b": {"k": "v"}}, indent=" ")
def test_xml_in_pieces_is_the_document_written_in_one_go(root: str, tree: dict[str, Any], indent: str) -> None:
    expected = outcome(plain_xml, root, tree, indent)
    assert outcome(to_xml, root, tree, indent=indent) == expected
    assert outcome(to_xml, root, tree, indent=indent) == expected  # again, now from the caches


@pytest.mark.parametrize("indent", [" ", "  "])
def test_a_list_of_messages_in_pieces(indent: str) -> None:
    message = {"id": "1", "text": "hi\r", "sender": USER, "recipient": {**USER, "id": "2"}}
    for tree in [
        {"@type": "array"},
        {"@type": "array", "direct_message": [message]},
        {"@type": "array", "direct_message": [message, {**message, "id": "2"}, message]},
    ]:
        assert to_xml("direct-messages", tree, indent=indent) == plain_xml("direct-messages", tree, indent)


def test_users_are_written_once_and_then_taken_from_the_cache() -> None:
    serialize._cached_fragment.cache_clear()
    users = {"sender": {**USER, "id": "41"}, "recipient": {**USER, "id": "42"}}
    for number in range(5):
        tree = {"id": str(number), "text": f"message {number}", **users}
        assert to_xml("direct_message", tree) == plain_xml("direct_message", tree)
    info = serialize._cached_fragment.cache_info()
    assert (info.misses, info.hits) == (2, 8)
    assert info.maxsize == serialize.FRAGMENT_CACHE_SIZE


def test_the_fragment_cache_is_bounded() -> None:
    serialize._cached_fragment.cache_clear()
    for number in range(serialize.FRAGMENT_CACHE_SIZE + 10):
        to_xml("r", {"u": {"id": str(number)}})
    assert serialize._cached_fragment.cache_info().currsize == serialize.FRAGMENT_CACHE_SIZE


def test_an_odd_indent_is_written_in_one_go() -> None:
    tree = {"u": USER, "v": "1"}
    assert to_xml("r", tree, indent="<x/>") == plain_xml("r", tree, "<x/>")
