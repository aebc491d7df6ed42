"""The fast paths of rendering against the straightforward ones: an XML document written in cached pieces is
the document written in one go, and an object taken from a renderer's memo is the object rendered afresh."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import xmltodict
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.dialects import StatusNet, TwitterClassic
from gateway.model import DirectMessage, MessageView, User
from gateway.render import serialize
from gateway.render.mapping import load_mapping
from gateway.render.serialize import to_json, to_xml
from gateway.render.template import OBJECT_CACHE_SIZE, Renderer, compile_template

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
# LONG is too long for the child cache: written each time.
LONG = "<a&\r>" * (serialize.CHILD_CACHE_MAX_LENGTH // 5 + 1)
_texts = st.sampled_from(
    ["", " ", "1", "true", "None", "x", "<b>&amp;</b>", "x > y", "AT&T", "a\rb", "\r\n", "a\x00b", "\x07", "]]>", "😀", "\ud800",
     "'\"", LONG]
)  # fmt: skip
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), st.integers(), st.floats(allow_nan=False, width=16), _texts,
    st.text(max_size=8),
)  # fmt: skip
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


# A fresh checkout builds its table of Unicode characters during the first draw: slow once, not a problem.
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
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
@example(
    root="r", tree={"a": 1, "b": True, "c": "1", "d": None, "e": "", "f": "a\r<&>b", "g": 1.0, "h": LONG}, indent=""
)
@example(root="r", tree={"a": "1", "b": [1, True], "#comment": "c", "c": 1, "d": ["x"], "e": {"a": 1}}, indent="\t")
@example(root="r", tree={"m": [{"a": 1, "b": [None]}, {"a": True, "b": "x"}], "a": "1"}, indent="")
@example(root="r", tree={"a": "x", "a b": "x", "c": "y"}, indent=" ")
@example(
    root="r", tree={"t": "'\"<&>]]>", "u": {"t": "'\"<&>"}, "m": [{"t": 'a"b'}]}, indent=" "
)  # text: only <&> escaped
@example(root="r", tree={"a": "AT&T", "b": "x > y", "c": "<", "d": "&amp;", "e": "a&b"}, indent=" ")  # each alone
def test_xml_in_pieces_is_the_document_written_in_one_go(root: str, tree: dict[str, Any], indent: str) -> None:
    expected = outcome(plain_xml, root, tree, indent)
    assert outcome(to_xml, root, tree, indent=indent) == expected
    assert outcome(to_xml, root, tree, indent=indent) == expected  # again, now from the caches


_alike = st.sampled_from([None, 0, 1, True, False, 1.0, 0.0, -0.0, "1", "true", "", "0", "None"])
_small_objects = st.dictionaries(st.sampled_from(["a", "b"]), _alike, max_size=2)


@given(
    st.lists(st.fixed_dictionaries({"u": _small_objects, "v": st.lists(st.fixed_dictionaries({"u": _small_objects}))}))
)
@example([{"u": {"a": 1}, "v": []}, {"u": {"a": True}, "v": []}, {"u": {"a": 1.0}, "v": []}])
@example([{"u": {"a": 0.0}, "v": []}, {"u": {"a": -0.0}, "v": []}, {"u": {"a": False}, "v": []}])
def test_objects_equal_in_python_but_written_differently_are_not_mixed_up(trees: list[dict[str, Any]]) -> None:
    for tree in trees:
        assert to_xml("r", tree) == plain_xml("r", tree)


@given(st.lists(st.dictionaries(st.sampled_from(["a", "b"]), _alike, max_size=2), max_size=6), _indents)
@example([{"a": 1}, {"a": True}, {"a": "1"}, {"a": "true"}], " ")
@example([{"a": 0}, {"a": False}, {"a": None}, {"a": ""}, {"a": "None"}], " ")
def test_children_equal_in_python_but_written_differently_are_not_mixed_up(
    trees: list[dict[str, Any]], indent: str
) -> None:
    for tree in trees:
        assert to_xml("r", tree, indent=indent) == plain_xml("r", tree, indent)
        assert to_xml("r", {"x": tree}, indent=indent) == plain_xml("r", {"x": tree}, indent)  # one level down


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


def test_repeated_children_are_taken_from_the_cache_and_unique_ones_written() -> None:
    serialize._ELEMENT_NAMES.clear()
    serialize._cached_child.cache_clear()
    serialize._cached_fragment.cache_clear()
    for number in range(5):
        tree = {"id": number, "text": f"message {number}", "sender_id": "41", "read": True, "url": None, "sender": USER}
        assert to_xml("direct_message", tree) == plain_xml("direct_message", tree)
    info = serialize._cached_child.cache_info()
    # The first body's children all come from the cache; later, printable text of a name seen before is put
    # between its tags without it (text and sender_id), the id (an integer) is new each time, read and url hit.
    assert (info.misses, info.hits) == (5 + 4, 4 * 2)
    assert info.maxsize == serialize.CHILD_CACHE_SIZE
    assert serialize._cached_fragment.cache_info().currsize == 1  # the user: its children are in its own piece


def test_the_child_cache_is_bounded() -> None:
    serialize._cached_child.cache_clear()
    for number in range(serialize.CHILD_CACHE_SIZE + 10):
        to_xml("r", {"id": number})
    assert serialize._cached_child.cache_info().currsize == serialize.CHILD_CACHE_SIZE


def test_child_names_are_remembered_within_a_bound() -> None:
    serialize._ELEMENT_NAMES.clear()
    tree = {"id": "1", "#text": "t", "@kind": "k", "#comment": "c", "text": "x"}
    assert to_xml("r", tree) == plain_xml("r", tree)
    names = serialize._names_at(1, " ")
    assert names == {"id": (" <id>", "</id>\n"), "text": (" <text>", "</text>\n")}  # never text, attributes, comments
    for number in range(serialize.ELEMENT_NAMES_SIZE + 10):
        to_xml("r", {f"n{number}": "1"})
    assert 0 < len(names) <= serialize.ELEMENT_NAMES_SIZE
    assert to_xml("r", tree) == plain_xml("r", tree)
    for depth in range(serialize.SHELL_CACHE_SIZE + 10):
        serialize._names_at(depth, " ")
    assert len(serialize._ELEMENT_NAMES) <= serialize.SHELL_CACHE_SIZE


def test_unique_children_do_not_push_users_out() -> None:
    serialize._cached_fragment.cache_clear()
    for number in range(serialize.CHILD_CACHE_SIZE + 10):
        to_xml("r", {"id": str(number), "text": str(-number), "sender": USER})
    info = serialize._cached_fragment.cache_info()
    assert (info.misses, info.currsize) == (1, 1)


def test_long_strings_are_written_each_time() -> None:
    serialize._cached_child.cache_clear()
    limit = serialize.CHILD_CACHE_MAX_LENGTH
    # Not printable, so not put between known tags: these come to the cache of children.
    for text in ("\t" + "é" * limit, "a\r<&>" * limit, "\t" + "x" * (limit - 1)):
        for _ in range(2):
            assert to_xml("r", {"text": text}) == plain_xml("r", {"text": text})
    info = serialize._cached_child.cache_info()
    assert (info.misses, info.hits, info.currsize) == (1, 1, 1)  # only the last, at the limit


def test_text_is_put_between_tags_written_once_per_name() -> None:
    serialize._ELEMENT_NAMES.clear()
    serialize._text_tags.cache_clear()
    for number in range(3):
        tree = {"text": f"<{number}> & 'so' on", "empty": "", "none": None}
        assert to_xml("r", tree) == plain_xml("r", tree)
    info = serialize._text_tags.cache_info()
    assert info.misses == 3  # once for each name ("empty" and "none" have no text: short tags, written whole)


def test_a_name_that_holds_the_text_marker_is_written_whole() -> None:
    name = f"a{serialize._TEXT_MARK}b"
    tree = {name: "1 < 2", "c": {name: "x"}}
    assert to_xml("r", tree) == plain_xml("r", tree)


def test_an_odd_indent_is_written_in_one_go() -> None:
    tree = {"u": USER, "v": "1"}
    assert to_xml("r", tree, indent="<x/>") == plain_xml("r", tree, "<x/>")


# Objects from a renderer's memo ----------------------------------------------------------------------------


def fresh(renderer: Renderer, name: str, value: Any) -> dict[str, Any]:
    """The object rendered afresh, never from a memo."""
    return renderer.render(name, {name: value})


def _renderer(tables: dict[str, dict[str, Any]], date_format: str = "{day} {hour}") -> Renderer:
    return Renderer({name: compile_template(name, table) for name, table in tables.items()}, date_format)


@pytest.mark.parametrize("mapping", ["twitter_v1", "statusnet", "twitter_events"])
def test_user_templates_read_nothing_but_the_user(mapping: str) -> None:
    loaded = load_mapping(mapping)
    for renderer in (loaded.json, loaded.xml):
        if renderer is not None and "user" in renderer.templates:
            assert renderer.templates["user"].own_attributes("user")
            assert not renderer.templates["direct_message"].own_attributes("direct_message")


@pytest.mark.parametrize(
    "table",
    [
        {"a": "user.id", "b": "user"},  # the value itself
        {"a": "user.id", "b": "user|span"},
        {"a": "user.created_at.year"},  # deeper than an attribute
        {"a": "user.id", "b": "user.entities|object(other)"},  # another template
        {"a": "user.id", "b": "user.items|each(other)"},
        {"a": "other.id"},  # another value
        {"a": "'constant'"},  # nothing at all
        {"a": "user.id", "b": {"c": "message.id"}},
    ],
)
def test_templates_that_read_more_than_attributes_of_their_value_are_not_memoized(table: dict[str, Any]) -> None:
    renderer = _renderer({"user": table, "other": {"v": "other"}})
    assert renderer.templates["user"].own_attributes("user") == ()
    assert "user" not in renderer._readers


def test_attributes_in_nested_tables_count() -> None:
    template = compile_template("user", {"a": "user.id|int", "b": {"c": "user.name", "d": "user.id"}, "e": "'x'"})
    assert template.own_attributes("user") == ("id", "name")
    assert template.own_attributes("someone") == ()


@pytest.mark.parametrize(
    "edit",
    [
        lambda tree: tree.__setitem__("screen_name", "spoiled"),
        lambda tree: tree.__delitem__("id"),
        lambda tree: tree.pop("id"),
        lambda tree: tree.popitem(),
        lambda tree: tree.clear(),
        lambda tree: tree.update(id=0),
        lambda tree: tree.setdefault("new", 1),
        lambda tree: tree.__ior__({"id": 0}),
    ],
)
def test_an_object_from_the_memo_is_shared_and_no_caller_can_spoil_it(edit: Any) -> None:
    renderer = load_mapping("twitter_v1").json
    user = User(id="7", username="ann", followers_count=3)
    first = renderer.render_object("user", user)
    with pytest.raises(TypeError):
        edit(first)
    second = renderer.render_object("user", User(id="7", username="ann", followers_count=3))
    assert second is first and second == fresh(renderer, "user", user)
    copy = dict(first)
    copy["id"] = 0
    assert renderer.render_object("user", user) == fresh(renderer, "user", user)
    assert len(renderer._memo) == 1


def test_a_dropped_key_does_not_reach_the_next_body_and_a_user_cannot_be_edited() -> None:
    dialect = TwitterClassic()
    view = MessageView(
        DirectMessage("5", "hi", datetime(2020, 1, 1, tzinfo=UTC), "7", "8"), User(id="7", username="ann"), User(id="8")
    )
    before = dialect.message_tree(view, "direct_message")
    edited = dialect.message_tree(view, "direct_message", drop=("entities", "sender"))
    assert "sender" not in edited and "entities" not in edited
    with pytest.raises(TypeError):
        edited["recipient"]["screen_name"] = "spoiled"
    assert dialect.message_tree(view, "direct_message") == before


def test_the_same_immutable_value_is_answered_without_reading_it_again() -> None:
    renderer = load_mapping("twitter_v1").json
    user = User(id="7", username="ann")
    first = renderer.render_object("user", user)
    renderer._memo.clear()  # only the value's identity can find it now
    assert renderer.render_object("user", user) is first
    equal = renderer.render_object("user", User(id="7", username="ann"))
    assert equal is not first and equal == first  # an equal value is looked up by its attributes


def test_a_value_that_can_change_is_read_each_time() -> None:
    class Person:
        def __init__(self, id: str) -> None:
            self.id = id

    renderer = _renderer({"user": {"id": "user.id"}})
    person = Person("1")
    assert renderer.render_object("user", person) == {"id": "1"}
    person.id = "2"
    assert renderer.render_object("user", person) == {"id": "2"}


def test_a_shared_object_is_written_once_per_name_and_depth() -> None:
    renderer = load_mapping("statusnet").xml
    assert renderer is not None
    user = renderer.render_object("user", User(id="7", username="ann"))
    serialize._cached_fragment.cache_clear()
    for _ in range(3):
        assert to_xml("r", {"sender": user, "recipient": user}) == plain_xml("r", {"sender": user, "recipient": user})
    assert set(user.written) == {("sender", 1, " "), ("recipient", 1, " ")}
    assert serialize._cached_fragment.cache_info().misses + serialize._cached_fragment.cache_info().hits == 2


def test_the_memo_is_bounded() -> None:
    renderer = load_mapping("statusnet").xml
    assert renderer is not None
    for number in range(OBJECT_CACHE_SIZE + 10):
        renderer.render_object("user", User(id=str(number)))
    assert len(renderer._memo) == OBJECT_CACHE_SIZE
    assert renderer.render_object("user", User(id="3")) == fresh(renderer, "user", User(id="3"))


# Values that are equal in Python yet render differently must not share an entry.
_counts = st.sampled_from([None, 0, 1, True, False, 1.0, -0.0, 0.0, "1"])
_moments = st.sampled_from(
    [
        None,
        datetime(2020, 1, 1, 12, 0),
        datetime(2020, 1, 1, 12, 0, tzinfo=UTC),
        datetime(2020, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1))),
        datetime(2020, 1, 1, 12, 0, tzinfo=ZoneInfo("Europe/London")),
        datetime(2022, 10, 30, 1, 30, tzinfo=ZoneInfo("Europe/London")),
        datetime(2022, 10, 30, 1, 30, fold=1, tzinfo=ZoneInfo("Europe/London")),
    ]
)
_users = st.builds(
    User,
    id=st.sampled_from(["1", "2"]),
    username=st.sampled_from([None, "ann", ""]),
    name=st.sampled_from([None, "Ann", "default_profile_images"]),
    protected=st.sampled_from([False, True, 0, 1]),
    created_at=_moments,
    profile_image_url=st.sampled_from([None, "http://a/default_profile_images/x.png", "https://b/c.png"]),
    followers_count=_counts,
    like_count=_counts,
)

STRICT_USER = {
    "id": "user.id",
    "protected": "user.protected",
    "protected_text": "user.protected|str",
    "name": "user.name|default('')",
    "followers": "user.followers_count|default(0)",
    "followers_text": "user.followers_count|str",
    "likes": "user.like_count|int",
    "created_at": "user.created_at",
    "created_text": "user.created_at|str",
    "created_date": "user.created_at|date",
    "created_millis": "user.created_at|millis",
    "image": "user.profile_image_url|https",
    "default_image": "user.profile_image_url|contains('default_profile_images')",
}


def _renderers() -> list[Renderer]:
    renderers = [
        _renderer({"user": STRICT_USER}, "{weekday} {month} {day:02d} {hour}:{minute:02d}:{second:02d} {year}")
    ]
    for name in ("twitter_v1", "statusnet"):
        mapping = load_mapping(name)
        renderers += [r for r in (mapping.json, mapping.xml) if r is not None and "user" in r.templates]
    return renderers


RENDERERS = _renderers()


def _outcome(render: Any, *args: Any) -> Any:
    try:
        return render(*args)
    except Exception as exc:  # noqa: BLE001 - which error, compared with the straightforward way's
        return type(exc)


def _typed(value: Any) -> Any:
    """A rendered object with the type of every value, so 1 and True are told apart."""
    if isinstance(value, dict):
        return {key: (type(item), repr(item)) for key, item in value.items()}
    return value


@settings(max_examples=300)
@given(st.lists(_users, min_size=1, max_size=12))
def test_objects_from_the_memo_are_the_objects_rendered_afresh(users: list[User]) -> None:
    for renderer in RENDERERS:
        for user in users:
            expected = _typed(_outcome(fresh, renderer, "user", user))
            assert _typed(_outcome(renderer.render_object, "user", user)) == expected


def test_a_value_that_is_not_memoizable_is_rendered_each_time() -> None:
    renderer = _renderer({"user": STRICT_USER})
    renderer.render_object("user", User(id="1", followers_count=1.5))  # type: ignore[arg-type]
    renderer.render_object("user", User(id="1", created_at=datetime(2020, 1, 1, tzinfo=UTC), like_count=2))
    assert len(renderer._memo) == 1


def test_an_object_with_a_mutable_value_is_not_kept() -> None:
    renderer = _renderer({"user": {"id": "user.id", "tags": ["a", "b"]}})
    first = renderer.render_object("user", User(id="1"))
    first["tags"].append("c")
    assert renderer.render_object("user", User(id="1"))["tags"] == ["a", "b"]
    assert len(renderer._memo) == 0


def test_bodies_are_unchanged_by_the_memo() -> None:
    """A dialect's bodies for the same users, rendered with a warm memo, are those rendered with none."""
    sender = User(id="7", username="ann", name="Ann", created_at=datetime(2010, 4, 16, 20, 12, 11, tzinfo=UTC))
    recipient = User(id="8", username="bob", followers_count=2)
    for dialect, fmt in ((StatusNet(), "xml"), (StatusNet(), "json"), (TwitterClassic(), "json")):
        bodies = []
        for number in range(3):
            message = DirectMessage(str(number), f"text {number}", datetime(2020, 1, 1, tzinfo=UTC), "7", "8")
            bodies.append(dialect.render_message(MessageView(message, sender, recipient), fmt, None).body)
        for number, body in enumerate(bodies):
            cold = type(dialect)()
            message = DirectMessage(str(number), f"text {number}", datetime(2020, 1, 1, tzinfo=UTC), "7", "8")
            assert cold.render_message(MessageView(message, sender, recipient), fmt, None).body == body


# JSON with shared objects written once ----------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """The tree with every shared object and every subclass of a JSON type made the plain type again."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return value


class _Text(str):
    pass


class _Number(int):
    pass


class _Items(list):  # type: ignore[type-arg]
    pass


class _Object(dict):  # type: ignore[type-arg]
    pass


_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False),
    _texts.filter(lambda text: "\ud800" not in text), st.text(max_size=8).map(_Text), st.integers(-2, 2).map(_Number),
    st.just("a/b </script>"),
)  # fmt: skip
_shared = st.dictionaries(st.sampled_from(["id", "name", "url"]), _json_scalars, max_size=3).map(serialize.SharedObject)


def _json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    lists = st.lists(inner, max_size=4)
    objects = st.dictionaries(st.text(max_size=3), inner, max_size=4)
    return st.one_of(lists, lists.map(_Items), objects, objects.map(_Object))


_json_values = st.recursive(st.one_of(_json_scalars, _shared), _json_containers, max_leaves=20)


@given(st.lists(_json_values, max_size=3), st.booleans())
@example([{"sender": serialize.SharedObject({"url": "http://a/b"}), "n": _Number(3), "t": _Text("x")}], True)
def test_json_with_shared_objects_is_the_plain_tree_written(trees: list[Any], escape_slashes: bool) -> None:
    for tree in trees + trees:  # twice: the second time from what the shared objects kept
        expected = orjson.dumps(_plain(tree))
        if escape_slashes:
            expected = expected.replace(b"/", b"\\/")
        assert to_json(tree, escape_slashes=escape_slashes) == expected


def test_a_shared_object_is_written_to_json_once() -> None:
    renderer = load_mapping("twitter_v1").json
    user = renderer.render_object("user", User(id="7", username="ann", url="https://t.co/x"))
    assert type(user) is serialize.SharedObject
    body = to_json({"sender": user, "recipient": user, "id": 1})
    assert body == orjson.dumps({"sender": dict(user), "recipient": dict(user), "id": 1})
    kept = user.written[serialize._JSON]
    assert to_json([{"sender": user}], escape_slashes=True) == orjson.dumps([{"sender": dict(user)}]).replace(
        b"/", b"\\/"
    )
    assert user.written[serialize._JSON] is kept  # taken from the object, not written again


def test_json_refuses_what_it_cannot_write() -> None:
    with pytest.raises(TypeError):
        to_json({"when": object()})


# Dates by position -----------------------------------------------------------------------------------------

_date_fields = st.sampled_from(["weekday", "month", "day", "hour", "minute", "second", "year"])
_date_pieces = st.one_of(
    st.sampled_from([" ", ":", "+0000", "{{", "}}", "{{x}}", "T", "%"]),
    st.builds("{{{}}}".format, _date_fields),
    st.builds("{{{}:02d}}".format, _date_fields),
    st.builds("{{{}!r}}".format, _date_fields),
    st.builds("{{{}:>{}}}".format, _date_fields, st.integers(0, 4)),
)
_any_moment = st.datetimes(timezones=st.none() | st.timezones() | st.just(UTC))


def _by_name(date_format: str, value: datetime) -> str:
    """A date formatted the straightforward way, by field names."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    weekdays = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    return date_format.format(
        weekday=weekdays[value.weekday()], month=months[value.month - 1], day=value.day, hour=value.hour,
        minute=value.minute, second=value.second, year=value.year,
    )  # fmt: skip


@given(st.lists(_date_pieces, max_size=8).map("".join), _any_moment)
@example("{weekday} {month} {day:02d} {hour:02d}:{minute:02d}:{second:02d} +0000 {year}", datetime(2012, 9, 7, 5, 4, 3))
@example("{weekday} {month} {day:02d} {hour}:{minute:02d}:{second:02d} +0000 {year}", datetime(2012, 9, 7, 5, 4, 3))
def test_dates_by_position_are_dates_by_name(date_format: str, moment: datetime) -> None:
    assert _outcome(Renderer({}, date_format).format_date, moment) == _outcome(_by_name, date_format, moment)


@pytest.mark.parametrize("date_format", ["{}", "{0}", "{zone}", "{day:{hour}}", "{day.real}", "{", "}"])
def test_date_formats_that_cannot_be_rewritten_work_or_fail_as_written(date_format: str) -> None:
    moment = datetime(2012, 9, 7, 5, 4, 3)
    assert _outcome(Renderer({}, date_format).format_date, moment) == _outcome(_by_name, date_format, moment)


_name_specs = st.sampled_from(["", ">4", "<3", "s", "d"])
_number_specs = st.sampled_from(
    ["", "d", "02d", "2", "0", "03", "010d", "1d", "0999", ">2", "+d", ",", "x", " d", "02s"]
)
_date_literals = st.sampled_from(["", " ", ":", "%", "%%", "%d", "{{", "}}", " +0000 ", "T"])


@st.composite
def _formats_of_every_field_in_order(draw: st.DrawFn) -> str:
    parts = []
    for field in ("weekday", "month", "day", "hour", "minute", "second", "year"):
        spec = draw(_name_specs if field in ("weekday", "month") else _number_specs)
        parts.append(draw(_date_literals) + "{" + field + (":" + spec if spec else "") + "}")
    return "".join(parts) + draw(_date_literals)


@settings(max_examples=300)
@given(_formats_of_every_field_in_order(), _any_moment)
@example("{weekday} {month} {day:2} {hour:3}:{minute:02}:{second:1d} {year:5}", datetime(2012, 9, 7, 5, 4, 3))
@example("%{weekday} {month}%d {day:0999} {hour:1d}:{minute:0}:{second:010d} {year}", datetime(2012, 9, 7, 5, 4, 3))
@example("{weekday:s} {month} {day:+d} {hour}:{minute}:{second} {year:,}", datetime(2012, 9, 7, 5, 4, 3))
def test_dates_printf_style_are_dates_by_name(date_format: str, moment: datetime) -> None:
    assert _outcome(Renderer({}, date_format).format_date, moment) == _outcome(_by_name, date_format, moment)


@pytest.mark.parametrize("name", ["statusnet", "twitter_v1"])
def test_the_mappings_dates_are_written_printf_style(name: str) -> None:
    mapping = load_mapping(name)
    for renderer in (mapping.json, mapping.xml):
        assert renderer is not None
        assert renderer._printf_date is not None  # the cheaper way, not str.format
