"""The XML writer against xmltodict, and the renderer's cache of users against rendering afresh: what the
gateway sends is the same whether a user was rendered a moment ago or never before."""

from __future__ import annotations

import dataclasses
import gc
import re
import tracemalloc
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
from gateway.render import template
from gateway.render.mapping import load_mapping
from gateway.render.serialize import SharedObject, to_json, to_xml
from gateway.render.template import OBJECT_CACHE_SIZE, Renderer, compile_template

# The XML writer against xmltodict ---------------------------------------------------------------------------

_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _prepared(value: Any) -> Any:
    """The tree as xmltodict is given it: strings without the characters XML cannot carry, booleans in lower
    case, other scalars as text."""
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
    """The document as xmltodict writes it with the gateway's options, CRs as character references."""
    document = {root: _prepared(tree)}
    text = xmltodict.unparse(document, pretty=True, indent=indent, short_empty_elements=True, encoding="UTF-8")
    return text.replace("\r", "&#13;").encode("utf-8") + b"\n"


# Few names and texts, so that the same subtrees come again within and across examples.
_names = st.sampled_from(["a", "b", "x", "user", "sender", "direct_message", "direct-messages", "a.b", "_c", "é"])
_texts = st.sampled_from(
    ["", " ", "1", "true", "None", "x", "<b>&amp;</b>", "x > y", "AT&T", "a\rb", "\r\n", "a\x00b", "\x07", "]]>", "😀",
     "\ud800", "'\"", "a\tb\nc", "\ufffe", "\x85\u2028"]
)  # fmt: skip
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), st.integers(), st.floats(allow_nan=False, width=16), _texts,
    st.text(max_size=8),
)  # fmt: skip
_users = st.dictionaries(_names, _scalars, max_size=5).map(SharedObject)


def _objects(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    children = st.dictionaries(_names, inner, max_size=5)
    attributes = st.dictionaries(_names.map(lambda name: "@" + name), _scalars, max_size=2)
    text = st.dictionaries(st.just("#text"), _scalars, max_size=1)
    return st.tuples(attributes, children, text, st.booleans()).map(
        lambda parts: {**parts[0], **parts[1], **parts[2]} if parts[3] else {**parts[2], **parts[1], **parts[0]}
    )


# What a template renders: scalars, objects, lists of scalars and objects (never a list in a list).
_values = st.recursive(
    st.one_of(_scalars, _users),
    lambda inner: st.one_of(_objects(inner), st.lists(st.one_of(_scalars, _users, _objects(inner)), max_size=3)),
    max_leaves=30,
)
_indents = st.sampled_from([" ", "  ", "\t", ""])

USER = {"id": "1", "name": "Ann", "location": None, "protected": True, "followers_count": 0, "lang": "en"}


# A fresh checkout builds its table of Unicode characters during the first draw: slow once, not a problem.
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(root=_names, tree=_objects(_values), indent=_indents)
@example(root="r", tree={"@t": "array", "#text": "x\r", "m": [{"u": USER}, None, "s", {"u": USER}]}, indent="  ")
@example(root="r", tree={"m": [{"@a": "1"}, {}, {"#text": "t"}, {"u": {}}]}, indent=" ")
@example(root="r", tree={"a": [], "b": {"c": []}, "#text": None}, indent=" ")
@example(root="r", tree={"u": {"a": 1}, "v": {"a": True}, "w": {"a": "1"}, "z": {"a": 1.0}}, indent=" ")
@example(root="r", tree={"a": 1, "b": True, "c": "1", "d": None, "e": "", "f": "a\r<&>b", "g": 1.0}, indent="")
@example(root="r", tree={"@q": "'\"<&>\r\n\t\x00", "@n": None, "@b": False, "@i": 3}, indent=" ")
@example(root="r", tree={"t": "'\"<&>]]>", "u": {"t": "'\"<&>"}, "m": [{"t": 'a"b'}]}, indent=" ")
@example(root="r", tree={"a": "AT&T", "b": "x > y", "c": "<", "d": "&amp;", "e": "\x07"}, indent="\t")
@example(root="r", tree={"sender": SharedObject(USER), "m": [{"sender": SharedObject(USER)}]}, indent=" ")
def test_the_xml_writer_writes_what_xmltodict_writes(root: str, tree: dict[str, Any], indent: str) -> None:
    expected = plain_xml(root, tree, indent)
    assert to_xml(root, tree, indent=indent) == expected
    assert to_xml(root, tree, indent=indent) == expected  # again: shared objects now give their kept text


def test_a_shared_object_is_written_right_wherever_it_stands() -> None:
    user = SharedObject(USER)
    for tree in (
        {"sender": user, "recipient": user},
        {"m": [{"sender": user}, {"sender": user}]},
        {"sender": user, "x": {"y": {"sender": user}}},
    ):
        for indent in (" ", "  "):
            assert to_xml("r", tree, indent=indent) == plain_xml("r", tree, indent)
            assert to_xml("other", tree, indent=indent) == plain_xml("other", tree, indent)


def test_a_shared_object_refuses_changes_and_a_copy_does_not() -> None:
    user = SharedObject(USER)
    for edit in (
        lambda tree: tree.__setitem__("screen_name", "spoiled"),
        lambda tree: tree.__delitem__("id"),
        lambda tree: tree.pop("id"),
        lambda tree: tree.popitem(),
        lambda tree: tree.clear(),
        lambda tree: tree.update(id=0),
        lambda tree: tree.setdefault("new", 1),
        lambda tree: tree.__ior__({"id": 0}),
    ):
        with pytest.raises(TypeError):
            edit(user)
    copy = dict(user)
    copy["id"] = "2"
    assert user == USER
    assert to_xml("r", {"u": user}) == plain_xml("r", {"u": USER})


# JSON -------------------------------------------------------------------------------------------------------


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


_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False),
    _texts.filter(lambda text: "\ud800" not in text), st.text(max_size=8).map(_Text), st.integers(-2, 2).map(_Number),
    st.just("a/b </script>"),
)  # fmt: skip
_json_values = st.recursive(
    st.one_of(_json_scalars, st.dictionaries(_names, _json_scalars, max_size=3).map(SharedObject)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=4)),
    max_leaves=20,
)


@given(_json_values, st.booleans())
@example({"sender": SharedObject({"url": "http://a/b"}), "n": _Number(3), "t": _Text("x")}, True)
def test_json_is_the_plain_tree_written(tree: Any, escape_slashes: bool) -> None:
    expected = orjson.dumps(_plain(tree))
    if escape_slashes:
        expected = expected.replace(b"/", b"\\/")
    assert to_json(tree, escape_slashes=escape_slashes) == expected


def test_a_shared_object_is_written_as_json_right_wherever_it_stands() -> None:
    user = SharedObject({"name": "a/b", "n": 1})
    assert to_json({"sender": user}, escape_slashes=True) == b'{"sender":{"name":"a\\/b","n":1}}'
    assert to_json([user, {"x": [user]}]) == orjson.dumps([dict(user), {"x": [dict(user)]}])


def test_json_refuses_what_it_cannot_write() -> None:
    with pytest.raises(TypeError):
        to_json({"when": object()})


# Users from the renderer's cache ----------------------------------------------------------------------------


def fresh(renderer: Renderer, name: str, value: Any) -> dict[str, Any]:
    """The object rendered afresh, never from the cache."""
    return renderer.render(name, {name: value})


def _renderer(tables: dict[str, dict[str, Any]], date_format: str = "{day} {hour}") -> Renderer:
    return Renderer({name: compile_template(name, table) for name, table in tables.items()}, date_format)


def _view(number: int, sender: User, recipient: User) -> MessageView:
    message = DirectMessage(str(number), f"text {number}", datetime(2020, 1, 1, tzinfo=UTC), sender.id, recipient.id)
    return MessageView(message, sender, recipient)


DIALECTS = [(StatusNet, "xml"), (StatusNet, "json"), (TwitterClassic, "json")]


@pytest.mark.parametrize(("dialect", "fmt"), DIALECTS)
def test_bodies_from_a_warm_cache_are_the_bodies_of_a_cold_one(dialect: Any, fmt: str) -> None:
    sender = User(id="7", username="ann", name="Ann", created_at=datetime(2010, 4, 16, 20, 12, 11, tzinfo=UTC))
    recipient = User(id="8", username="bob", followers_count=2)
    warm = dialect()
    bodies = [warm.render_message(_view(number, sender, recipient), fmt, None).body for number in range(3)]
    bodies.append(warm.render_messages((_view(0, sender, recipient), _view(1, recipient, sender)), fmt, None).body)
    assert bodies[:3] == [dialect().render_message(_view(n, sender, recipient), fmt, None).body for n in range(3)]
    cold = dialect().render_messages((_view(0, sender, recipient), _view(1, recipient, sender)), fmt, None).body
    assert bodies[3] == cold


@pytest.mark.parametrize(("dialect", "fmt"), DIALECTS)
def test_a_user_edited_between_calls_is_rendered_afresh(dialect: Any, fmt: str) -> None:
    gateway = dialect()
    sender = User(id="7", username="ann", name="Ann", followers_count=1)
    recipient = User(id="8", username="bob")
    before = gateway.render_message(_view(1, sender, recipient), fmt, None).body
    renamed = dataclasses.replace(sender, username="anne", name="Anne <A&B>", followers_count=2)
    after = gateway.render_message(_view(1, renamed, recipient), fmt, None).body
    assert after != before
    assert after == dialect().render_message(_view(1, renamed, recipient), fmt, None).body
    assert gateway.render_message(_view(1, sender, recipient), fmt, None).body == before


def test_users_of_one_id_share_a_hash_but_are_equal_only_field_for_field() -> None:
    """The renderer keeps rendered users by user: two records of one user that differ in any field are two
    keys, each with its own rendering."""
    ann = User(id="7", username="ann", followers_count=1)
    assert hash(ann) == hash(User(id="7", username="ann", followers_count=1))
    changed = dataclasses.replace(ann, followers_count=2)
    assert changed != ann
    assert {ann: "one", changed: "two"} == {User(id="7", username="ann", followers_count=1): "one", changed: "two"}


def test_a_user_named_again_by_an_equal_object_is_compared_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A list names each user, one object, in every message: after one comparison with the kept value, the
    renderer knows that object itself."""
    compared: list[Any] = []
    real = template._render_alike
    monkeypatch.setattr(template, "_render_alike", lambda kept, given: compared.append(given) or real(kept, given))
    gateway = TwitterClassic()
    first, again, recipient = User(id="7", username="ann"), User(id="7", username="ann"), User(id="8")
    trees = [gateway.message_tree(_view(number, user, recipient), "direct_message") for number, user in
             enumerate([first, again, again, again])]  # fmt: skip
    assert len(compared) == 1  # again against first, then again itself
    assert all(tree["sender"] is trees[0]["sender"] for tree in trees)


def test_a_dropped_key_does_not_reach_the_next_body_and_a_user_cannot_be_edited() -> None:
    dialect = TwitterClassic()
    view = _view(5, User(id="7", username="ann"), User(id="8"))
    before = dialect.message_tree(view, "direct_message")
    edited = dialect.message_tree(view, "direct_message", drop=("entities", "sender"))
    assert "sender" not in edited and "entities" not in edited
    with pytest.raises(TypeError):
        edited["recipient"]["screen_name"] = "spoiled"
    assert dialect.message_tree(view, "direct_message") == before


@pytest.mark.parametrize(("dialect", "fmt"), DIALECTS)
def test_a_list_shown_again_is_the_list_shown_before_and_written_once(dialect: Any, fmt: str) -> None:
    """The same views (the very objects, as the service hands over for a page it learned as it is) give the
    same body from kept messages, as rendering afresh gives it; an equal but other object is rendered anew."""
    sender, recipient = User(id="7", username="ann", name="A/B <c>"), User(id="8", username="bob")
    views = tuple(_view(number, sender, recipient) for number in range(3))
    gateway = dialect()
    first = gateway.render_messages(views, fmt, None).body
    renderer = gateway.mapping.xml if fmt == "xml" else gateway.mapping.json
    kept = list(renderer._kept.values())
    assert len(kept) == 3 and all(isinstance(obj, SharedObject) for _, obj in kept)
    assert gateway.render_messages(views, fmt, None).body == first == dialect().render_messages(views, fmt, None).body
    assert [obj for _, obj in renderer._kept.values()] == [obj for _, obj in kept]  # nothing rendered again
    written = [obj.written if fmt == "xml" else obj.json for _, obj in kept]
    assert all(written)  # each message's text kept on it, written once
    copies = tuple(dataclasses.replace(view, message=dataclasses.replace(view.message)) for view in views)
    assert gateway.render_messages(copies, fmt, None).body == first
    assert len(renderer._kept) == 6
    single = gateway.render_message(views[0], fmt, None).body  # a single message is never kept
    assert len(renderer._kept) == 6 and single == dialect().render_message(views[0], fmt, None).body


def test_a_kept_message_is_shown_without_dropped_keys_and_cannot_be_edited() -> None:
    gateway = TwitterClassic()
    views = (_view(5, User(id="7", username="ann"), User(id="8")),)
    whole = gateway.message_tree(views[0], "direct_message", kept=True)
    dropped = gateway.message_tree(views[0], "direct_message", ("entities",), kept=True)
    assert (
        "entities" in whole
        and "entities" not in dropped
        and dropped == {k: v for k, v in whole.items() if k != "entities"}
    )
    assert gateway.message_tree(views[0], "direct_message", kept=True) is whole
    with pytest.raises(TypeError):
        whole["text"] = "spoiled"
    body = orjson.loads(gateway.render_messages(views, "json", None, drop=("entities",)).body)
    assert (
        "entities" not in body[0] and "entities" in orjson.loads(gateway.render_messages(views, "json", None).body)[0]
    )


def test_a_context_with_a_value_that_can_change_is_rendered_each_time() -> None:
    class Note:
        def __init__(self, text: str) -> None:
            self.text = text

    renderer = _renderer({"m": {"text": "note.text"}})
    note = Note("one")
    assert renderer.render_kept("m", {"note": note}) == {"text": "one"}
    note.text = "two"
    assert renderer.render_kept("m", {"note": note}) == {"text": "two"}
    assert renderer._kept == {}


def test_kept_renders_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(template, "KEPT_RENDER_SIZE", 4)
    renderer = _renderer({"m": {"id": "user.id"}})
    users = [User(id=str(n)) for n in range(10)]
    for user in users:
        assert renderer.render_kept("m", {"user": user}) == {"id": user.id}
        assert len(renderer._kept) <= 4
    assert renderer.render_kept("m", {"user": users[-1]}) is renderer.render_kept("m", {"user": users[-1]})


def test_a_shared_object_holding_shared_objects_is_written_as_the_plain_tree() -> None:
    user = SharedObject({"name": "a/b", "n": 1})
    message = SharedObject({"text": "x", "sender": user, "entities": {"urls": [{"u": "h/t"}]}, "r": user})
    plain = orjson.dumps([_plain(message), _plain(message)])
    assert to_json([message, message]) == plain
    assert to_json({"m": message}, escape_slashes=True) == orjson.dumps({"m": _plain(message)}).replace(b"/", b"\\/")


def test_a_value_that_can_change_is_read_each_time() -> None:
    class Person:
        def __init__(self, id: str) -> None:
            self.id = id

    renderer = _renderer({"user": {"id": "user.id"}})
    person = Person("1")
    assert renderer.render_object("user", person) == {"id": "1"}
    person.id = "2"
    assert renderer.render_object("user", person) == {"id": "2"}


def test_a_deeper_value_that_can_change_is_read_each_time() -> None:
    class Moment:
        def __init__(self, year: int) -> None:
            self.year = year

    renderer = _renderer({"user": {"id": "user.id", "year": "user.created_at.year"}})
    moment = Moment(2020)
    user = User(id="1", created_at=moment)  # type: ignore[arg-type]
    assert renderer.render_object("user", user) == {"id": "1", "year": 2020}
    moment.year = 2021
    assert renderer.render_object("user", user) == {"id": "1", "year": 2021}


def test_an_object_with_a_mutable_value_is_not_shared() -> None:
    renderer = _renderer({"user": {"id": "user.id", "tags": ["a", "b"]}})
    first = renderer.render_object("user", User(id="1"))
    first["tags"].append("c")
    assert renderer.render_object("user", User(id="1"))["tags"] == ["a", "b"]


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_the_cache_of_users_is_bounded(fmt: str) -> None:
    """Rendering (and writing) many more users than the cache keeps takes no more memory than filling it."""
    gateway = StatusNet()
    recipient = User(id="1", username="bob")

    def render(first: int, count: int) -> None:
        for number in range(first, first + count):
            sender = User(id=str(10 + number), username=f"user{number}", name=f"User {number}")
            gateway.render_message(_view(number, sender, recipient), fmt, None)

    tracemalloc.start()
    try:
        render(0, OBJECT_CACHE_SIZE)
        gc.collect()
        full = tracemalloc.get_traced_memory()[0]
        render(OBJECT_CACHE_SIZE, 4 * OBJECT_CACHE_SIZE)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - full
    finally:
        tracemalloc.stop()
    assert grown < full // 10, (full, grown)


@pytest.mark.parametrize(("dialect", "fmt"), DIALECTS)
def test_the_messages_kept_for_lists_are_bounded(dialect: Any, fmt: str) -> None:
    """Listing many more messages than the renderer keeps takes no more memory than filling it."""
    gateway = dialect()
    sender, recipient = User(id="7", username="ann"), User(id="8", username="bob")

    def show(first: int, count: int) -> None:
        for start in range(first, first + count, 50):
            gateway.render_messages(tuple(_view(n, sender, recipient) for n in range(start, start + 50)), fmt, None)

    tracemalloc.start()
    try:
        show(0, template.KEPT_RENDER_SIZE)
        gc.collect()
        full = tracemalloc.get_traced_memory()[0]
        show(template.KEPT_RENDER_SIZE, 4 * template.KEPT_RENDER_SIZE)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - full
    finally:
        tracemalloc.stop()
    assert grown < full // 10, (full, grown)


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
_model_users = st.builds(
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
    except Exception as exc:  # noqa: BLE001 - which error, compared with rendering afresh
        return type(exc)


def _typed(value: Any) -> Any:
    """A rendered object with the type of every value, so 1 and True are told apart."""
    if isinstance(value, dict):
        return {key: (type(item), repr(item)) for key, item in value.items()}
    return value


@settings(max_examples=300)
@given(st.lists(_model_users, min_size=1, max_size=12))
def test_objects_from_the_cache_are_the_objects_rendered_afresh(users: list[User]) -> None:
    for renderer in RENDERERS:
        for user in users:
            expected = _typed(_outcome(fresh, renderer, "user", user))
            assert _typed(_outcome(renderer.render_object, "user", user)) == expected


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
def test_templates_that_read_more_than_attributes_of_their_value_read_nothing_of_their_own(
    table: dict[str, Any],
) -> None:
    assert compile_template("user", table).own_attributes("user") == ()


def test_attributes_in_nested_tables_count() -> None:
    template = compile_template("user", {"a": "user.id|int", "b": {"c": "user.name", "d": "user.id"}, "e": "'x'"})
    assert template.own_attributes("user") == ("id", "name")
    assert template.own_attributes("someone") == ()
