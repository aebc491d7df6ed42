"""The mapping expression language, loading mappings/*.toml, and the JSON and XML serializers."""

from __future__ import annotations

import locale
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.errors import ERROR_KINDS
from gateway.model import DirectMessage, Entities, Hashtag, Mention, MessageView, Url, User
from gateway.render import mapping as mapping_module
from gateway.render import serialize
from gateway.render import template as template_module
from gateway.render.mapping import load_mapping
from gateway.render.serialize import to_json, to_xml
from gateway.render.template import MappingError, Renderer, check_references, compile_template, compile_value

MAPPINGS_DIR = Path(__file__).resolve().parent.parent / "mappings"
MAPPING_NAMES = sorted(p.stem for p in MAPPINGS_DIR.glob("*.toml"))

TWITTER_DATE = "{weekday} {month} {day:02d} {hour:02d}:{minute:02d}:{second:02d} +0000 {year}"
UNPADDED_HOUR_DATE = "{weekday} {month} {day:02d} {hour}:{minute:02d}:{second:02d} +0000 {year}"


def renderer(tables: Mapping[str, Mapping[str, Any]], date_format: str = TWITTER_DATE) -> Renderer:
    """Compile templates the way a mapping does, reference check included."""
    templates = {name: compile_template(name, table) for name, table in tables.items()}
    check_references(templates, tables, "test")
    return Renderer(templates, date_format)


def value(expression: Any, **context: Any) -> Any:
    """Evaluate one expression against a context."""
    return renderer({"t": {"v": expression}}).render("t", context)["v"]


SENDER = User(
    id="11",
    username="sender",
    name="Sender",
    profile_image_url="https://pbs.twimg.com/profile_images/1/a_normal.jpg",
    followers_count=5,
    created_at=datetime(2009, 3, 1, 12, 0, 0, tzinfo=UTC),
)
PLACEHOLDER = User(id="22")
MESSAGE = DirectMessage(
    id="240251665733795841",
    text="hi #tag https://t.co/x @sender",
    created_at=datetime(2012, 9, 7, 5, 4, 3, tzinfo=UTC),
    sender_id="11",
    recipient_id="22",
    entities=Entities(
        hashtags=(Hashtag("tag", 3, 7), Hashtag("two", 40, 44)),
        urls=(Url("https://t.co/x", "https://example.com/", "example.com", 8, 22),),
        mentions=(Mention("sender", "11", 23, 30),),
    ),
)


# Constants and paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize("constant", [True, False, 0, 7, -3, 1.5])
def test_toml_constants_are_returned_as_is(constant: Any) -> None:
    result = value(constant)
    assert result == constant and type(result) is type(constant)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("'en'", "en"),
        ("''", ""),
        ("'C0DEED'", "C0DEED"),
        ("'http://abs.twimg.com/images/themes/theme1/bg.png'", "http://abs.twimg.com/images/themes/theme1/bg.png"),
        ("'two words'", "two words"),
        ("null", None),
        ("true", True),
        ("false", False),
        ("42", 42),
        ("-42", -42),
        ("  'padded'  ", "padded"),
    ],
)
def test_literal_expressions(expression: str, expected: Any) -> None:
    result = value(expression)
    assert result == expected and type(result) is type(expected)


def test_paths_read_attributes_of_context_objects() -> None:
    assert value("message.id", message=MESSAGE) == "240251665733795841"
    assert value("message.text", message=MESSAGE) == MESSAGE.text
    assert value("message.entities", message=MESSAGE) is MESSAGE.entities
    assert value("sender", sender=SENDER) is SENDER


def test_a_path_through_none_is_none() -> None:
    assert value("user.created_at", user=PLACEHOLDER) is None
    assert value("missing.anything.deeper", missing=None) is None


def test_keys_and_constants_are_data_whatever_they_spell() -> None:
    """A template compiles to Python; no key, constant or argument is ever read as code."""
    hostile = "x'}; import os; {'y"
    tables = {"t": {hostile: f"'{hostile}'", 'q"\\\n': "missing|default('} or 1 #')"}}
    assert renderer(tables).render("t", {"missing": None}) == {hostile: hostile, 'q"\\\n': "} or 1 #"}


def test_a_path_may_name_an_attribute_spelled_like_a_keyword() -> None:
    assert value("thing.class|str", thing=SimpleNamespace(**{"class": 5})) == "5"
    assert value("thing.class.if", thing=SimpleNamespace(**{"class": None})) is None


def test_output_keeps_template_key_order() -> None:
    r = renderer({"t": {"z": "'1'", "a": "'2'", "m": "'3'"}})
    assert list(r.render("t", {})) == ["z", "a", "m"]


# Filters -------------------------------------------------------------------------------------------------


def test_int_filter() -> None:
    result = value("message.id|int", message=MESSAGE)
    assert result == 240251665733795841 and type(result) is int
    assert value("user.followers_count|int", user=PLACEHOLDER) is None


def test_str_filter() -> None:
    assert value("user.followers_count|str", user=SENDER) == "5"
    assert value("user.followers_count|str", user=PLACEHOLDER) is None
    assert value("user.followers_count|default(0)|str", user=PLACEHOLDER) == "0"


def test_http_and_https_filters() -> None:
    assert value("user.profile_image_url|http", user=SENDER) == "http://pbs.twimg.com/profile_images/1/a_normal.jpg"
    assert value("user.profile_image_url|https", user=SENDER) == SENDER.profile_image_url
    plain = User(id="1", profile_image_url="http://example.com/a.png")
    assert value("user.profile_image_url|https", user=plain) == "https://example.com/a.png"
    no_scheme = User(id="1", profile_image_url="example.com/a.png")
    assert value("user.profile_image_url|https", user=no_scheme) == "example.com/a.png"
    assert value("user.profile_image_url|http", user=PLACEHOLDER) is None


def test_span_filter() -> None:
    assert value("h|span", h=Hashtag("tag", 3, 7)) == [3, 7]
    assert value("m|span", m=Mention("x", None, 0, 2)) == [0, 2]
    assert value("h|span", h=None) is None


def test_date_filter() -> None:
    assert value("message.created_at|date", message=MESSAGE) == "Fri Sep 07 05:04:03 +0000 2012"
    assert value("user.created_at|date", user=PLACEHOLDER) is None


def test_default_filter() -> None:
    assert value("user.description|default('')", user=PLACEHOLDER) == ""
    assert value("user.like_count|default(0)", user=PLACEHOLDER) == 0
    assert value("user.username|default('')", user=SENDER) == "sender"
    assert value("user.followers_count|default(0)", user=SENDER) == 5
    # A falsy value that is not null is kept.
    zero = User(id="1", followers_count=0, description="")
    assert value("user.followers_count|default(9)", user=zero) == 0
    assert value("user.description|default('x')", user=zero) == ""


def test_contains_filter() -> None:
    default_image = User(id="1", profile_image_url="https://abs.twimg.com/sticky/default_profile_images/x.png")
    expression = "user.profile_image_url|contains('default_profile_images')"
    assert value(expression, user=default_image) is True
    assert value(expression, user=SENDER) is False
    assert value(expression, user=PLACEHOLDER) is False
    assert value("user.followers_count|contains('5')", user=SENDER) is False


def test_object_filter_renders_a_nested_template() -> None:
    r = renderer(
        {
            "dm": {"id": "message.id", "sender": "sender|object(user)", "recipient": "recipient|object(user)"},
            "user": {"id": "user.id|int", "screen_name": "user.username|default('')"},
        }
    )
    body = r.render("dm", {"message": MESSAGE, "sender": SENDER, "recipient": PLACEHOLDER})
    assert body == {
        "id": MESSAGE.id,
        "sender": {"id": 11, "screen_name": "sender"},
        "recipient": {"id": 22, "screen_name": ""},
    }
    assert r.render("dm", {"message": MESSAGE, "sender": None, "recipient": SENDER})["sender"] is None


def test_each_filter_renders_a_list() -> None:
    r = renderer(
        {
            "entities": {"hashtags": "entities.hashtags|each(hashtag)", "urls": "entities.urls|each(url)"},
            "hashtag": {"text": "hashtag.text", "indices": "hashtag|span"},
            "url": {"url": "url.url", "indices": "url|span"},
        }
    )
    assert r.render("entities", {"entities": MESSAGE.entities}) == {
        "hashtags": [{"text": "tag", "indices": [3, 7]}, {"text": "two", "indices": [40, 44]}],
        "urls": [{"url": "https://t.co/x", "indices": [8, 22]}],
    }
    assert r.render("entities", {"entities": Entities()}) == {"hashtags": [], "urls": []}
    assert r.render("entities", {"entities": None}) == {"hashtags": [], "urls": []}


def test_object_and_each_accept_spaces_around_the_name() -> None:
    r = renderer({"a": {"b": "x | object( b )", "c": "y|each(  b  )"}, "b": {"v": "b"}})
    assert r.render("a", {"x": 1, "y": [2, 3]}) == {"b": {"v": 1}, "c": [{"v": 2}, {"v": 3}]}


def test_filters_chain_left_to_right() -> None:
    assert value("user.followers_count|default(0)|str", user=SENDER) == "5"
    assert value("user.tweet_count|default('7')|int", user=PLACEHOLDER) == 7


# Dates ---------------------------------------------------------------------------------------------------

WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


@pytest.fixture
def foreign_locale() -> Iterator[str | None]:
    """Switch LC_ALL to a non-English locale if the machine has one; restore it afterwards."""
    saved = locale.setlocale(locale.LC_ALL)
    chosen = None
    for name in ("de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8", "es_ES.UTF-8", "ru_RU.UTF-8", "de_DE"):
        try:
            locale.setlocale(locale.LC_ALL, name)
        except locale.Error:
            continue
        chosen = name
        break
    try:
        yield chosen
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def test_dates_are_english_whatever_the_locale(foreign_locale: str | None) -> None:
    r = Renderer({}, TWITTER_DATE)
    if foreign_locale is not None:
        # The locale really is foreign: strftime would not give the English abbreviation.
        assert datetime(2012, 10, 1).strftime("%a %b") != "Mon Oct" or foreign_locale.startswith("en")
    # Every weekday: 2024-01-01 was a Monday.
    for offset, name in enumerate(WEEKDAYS):
        day = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=offset)
        assert r.format_date(day).split()[0] == name
    # Every month.
    for month, name in enumerate(MONTHS, start=1):
        assert r.format_date(datetime(2021, month, 15, tzinfo=UTC)).split()[1] == name


def test_padded_and_unpadded_hour_styles() -> None:
    when = datetime(2012, 9, 7, 5, 4, 3, tzinfo=UTC)
    assert Renderer({}, TWITTER_DATE).format_date(when) == "Fri Sep 07 05:04:03 +0000 2012"
    assert Renderer({}, UNPADDED_HOUR_DATE).format_date(when) == "Fri Sep 07 5:04:03 +0000 2012"
    late = datetime(2012, 9, 7, 23, 0, 9, tzinfo=UTC)
    assert Renderer({}, TWITTER_DATE).format_date(late) == "Fri Sep 07 23:00:09 +0000 2012"
    assert Renderer({}, UNPADDED_HOUR_DATE).format_date(late) == "Fri Sep 07 23:00:09 +0000 2012"
    midnight = datetime(2000, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert Renderer({}, TWITTER_DATE).format_date(midnight) == "Sat Jan 01 00:00:00 +0000 2000"
    assert Renderer({}, UNPADDED_HOUR_DATE).format_date(midnight) == "Sat Jan 01 0:00:00 +0000 2000"


def test_mappings_use_their_dialects_hour_style() -> None:
    when = datetime(2012, 9, 7, 5, 4, 3, tzinfo=UTC)
    assert load_mapping("twitter_v1").json.format_date(when) == "Fri Sep 07 05:04:03 +0000 2012"
    # StatusNet wrote dates with PHP's 'D M d H:i:s O Y': the hour zero-padded too.
    statusnet = load_mapping("statusnet")
    assert statusnet.json.format_date(when) == "Fri Sep 07 05:04:03 +0000 2012"
    assert statusnet.xml is not None
    assert statusnet.xml.format_date(when) == "Fri Sep 07 05:04:03 +0000 2012"


def test_dates_with_another_offset_are_shown_in_utc() -> None:
    # The format says +0000, so the clock must be UTC: 01:30 at +02:00 is 23:30 the day before.
    plus_two = timezone(timedelta(hours=2))
    when = datetime(2020, 1, 1, 1, 30, 0, tzinfo=plus_two)
    assert Renderer({}, TWITTER_DATE).format_date(when) == "Tue Dec 31 23:30:00 +0000 2019"


def test_naive_dates_are_taken_as_utc() -> None:
    assert Renderer({}, TWITTER_DATE).format_date(datetime(2012, 9, 7, 5, 4, 3)) == "Fri Sep 07 05:04:03 +0000 2012"


# Compile errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "message.id|nope",  # unknown filter
        "message.id|INT",
        "message.id|int|",  # empty filter
        "message.id|in t",
        "message.id|int(3)",  # plain filters take no argument
        "message.id|str('x')",
        "message.id|default(a b)",
        "message.id|default(())",
        "user.url|contains(1)",
        "user.url|contains",
        "sender|object(1)",
        "sender|object",
        "sender|each('')",
        "sender|object('user')",  # a template name is a bare word, not a string
        "user.description|default",  # default needs its value
        "user.created_at|date('x')",
        "user.url|contains(foo)",  # contains needs a quoted string
        "Message.id",  # bad paths
        "message..id",
        "message.",
        ".id",
        "message id",
        "message-id",
        "message.id2",
        "",
        "'unterminated",
        "message[0]",
    ],
)
def test_bad_expressions_are_mapping_errors(expression: str) -> None:
    with pytest.raises(MappingError) as info:
        compile_value("tpl.key", expression)
    assert "tpl.key" in str(info.value)


@pytest.mark.parametrize("constant", [[{"a": 1}], [[1]], [None], {"a": None}, None, datetime(2020, 1, 1)])
def test_values_that_are_neither_expressions_nor_constants(constant: Any) -> None:
    with pytest.raises(MappingError):
        compile_value("tpl.key", constant)


def test_an_array_of_scalars_is_a_constant_and_never_shared() -> None:
    tables = {"dm": {"symbols": [], "tags": ["a", 1, True]}}
    first = renderer(tables).render("dm", {})
    assert first == {"symbols": [], "tags": ["a", 1, True]}
    first["symbols"].append("changed")
    assert renderer(tables).render("dm", {})["symbols"] == []


def test_a_table_is_a_nested_object_rendered_from_the_same_context() -> None:
    tables = {
        "event": {
            "id": "message.id",
            "message_create": {"target": {"recipient_id": "recipient.id"}, "sender_id": "sender.id"},
            "after": "'last'",
        }
    }
    context = {
        "message": SimpleNamespace(id="5"),
        "recipient": SimpleNamespace(id="2"),
        "sender": SimpleNamespace(id="1"),
    }
    rendered = renderer(tables).render("event", context)
    assert rendered == {
        "id": "5",
        "message_create": {"target": {"recipient_id": "2"}, "sender_id": "1"},
        "after": "last",
    }
    assert list(rendered) == ["id", "message_create", "after"]
    assert list(rendered["message_create"]) == ["target", "sender_id"]


def test_a_missing_template_inside_a_nested_table_is_found_at_load() -> None:
    with pytest.raises(MappingError, match=r"event.message_create.data"):
        renderer({"event": {"message_create": {"data": "message|object(nothing)"}}})


@pytest.mark.parametrize(
    ("moment", "millis"),
    [
        (datetime(2012, 8, 28, 0, 57, 15, tzinfo=UTC), 1346115435000),
        (datetime(2022, 10, 22, 18, 0, 0, 123000, tzinfo=UTC), 1666461600123),
        (datetime(2022, 10, 22, 20, 0, 0, 999999, tzinfo=timezone(timedelta(hours=2))), 1666461600999),
        (datetime(1970, 1, 1), 0),
    ],
)
def test_millis_is_epoch_milliseconds_in_utc(moment: datetime, millis: int) -> None:
    tables = {"event": {"ts": "message.created_at|millis|str", "n": "message.created_at|millis"}}
    rendered = renderer(tables).render("event", {"message": SimpleNamespace(created_at=moment)})
    assert rendered == {"ts": str(millis), "n": millis}


@pytest.mark.parametrize(
    "expression",
    ["sender|object(usr)", "entities.hashtags|each(tag)", "sender|object('usr')", "sender | object( usr )"],
)
def test_reference_to_a_missing_template(expression: str) -> None:
    tables = {"dm": {"sender": expression}, "user": {"id": "user.id"}, "hashtag": {"text": "hashtag.text"}}
    with pytest.raises(MappingError, match=r"dm.sender"):
        renderer(tables)


def test_compile_template_reports_where() -> None:
    with pytest.raises(MappingError, match=r"statusnet\.json\.user\.bad"):
        compile_template("statusnet.json.user", {"ok": "user.id", "bad": "user.id|frobnicate"})


# Mapping files ---------------------------------------------------------------------------------------------


def test_there_are_mapping_files() -> None:
    assert {"twitter_v1", "twitter_events", "statusnet"} <= set(MAPPING_NAMES)


@pytest.mark.parametrize("name", MAPPING_NAMES)
def test_every_mapping_loads_and_covers_every_error_kind(name: str) -> None:
    mapping = load_mapping(name)
    assert mapping.name == name
    assert set(ERROR_KINDS) <= set(mapping.errors)
    for kind in ERROR_KINDS:
        spec = mapping.errors[kind]
        assert 400 <= spec.status <= 599, (kind, spec)
        assert spec.message.strip(), kind
        assert spec.code is None or isinstance(spec.code, int)
    assert mapping.error_style in ("twitter", "statusnet")
    assert "direct_message" in mapping.json.templates


@pytest.mark.parametrize("name", MAPPING_NAMES)
@pytest.mark.parametrize("recipient", [SENDER, PLACEHOLDER], ids=["known", "placeholder"])
def test_every_mapping_renders_and_serializes_a_message(name: str, recipient: User) -> None:
    mapping = load_mapping(name)
    view = MessageView(MESSAGE, SENDER, recipient)
    context = {"message": view.message, "sender": view.sender, "recipient": view.recipient}
    body = mapping.json.render("direct_message", context)
    assert orjson.loads(to_json(body, escape_slashes=mapping.json_escape_slashes)) == body
    if mapping.xml is not None and "direct_message" in mapping.xml.templates:
        tree = mapping.xml.render("direct_message", context)
        root = ET.fromstring(to_xml("direct_message", tree, indent=mapping.xml_indent))
        assert root.findtext("id") == MESSAGE.id


def test_unknown_mapping_name() -> None:
    with pytest.raises(MappingError):
        load_mapping("no_such_dialect")


def _load_edited(monkeypatch: pytest.MonkeyPatch, name: str, edit: Any) -> None:
    """Load mapping ``name`` with its data changed by ``edit`` first."""
    read = mapping_module._read

    def edited(wanted: str) -> dict[str, Any]:
        data = read(wanted)
        edit(data)
        return data

    monkeypatch.setattr(mapping_module, "_read", edited)
    load_mapping(name)


@pytest.mark.parametrize("key", ["a b", "<a>", "a/b", "?a", "1a", "a=b", "@type", "#text", ""])
def test_an_xml_template_key_that_is_no_element_name_stops_loading(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    with pytest.raises(MappingError, match="not an XML element name"):
        _load_edited(monkeypatch, "statusnet", lambda data: data["xml"]["templates"]["user"].update({key: "user.id"}))
    nested = {"site": {key: "'x'"}}
    with pytest.raises(MappingError, match="not an XML element name"):
        _load_edited(monkeypatch, "statusnet", lambda data: data["xml"]["templates"]["config"].update(nested))


def test_json_template_keys_are_not_held_to_xml_names(monkeypatch: pytest.MonkeyPatch) -> None:
    _load_edited(monkeypatch, "statusnet", lambda data: data["json"]["templates"]["user"].update({"a b": "user.id"}))


@pytest.mark.parametrize("date_format", ["{zone}", "{}", "{0}", "{day.real.x}", "{", "}", "{weekday:d}", "{day!z}"])
def test_a_date_format_that_cannot_format_a_date_stops_loading(
    monkeypatch: pytest.MonkeyPatch, date_format: str
) -> None:
    with pytest.raises(MappingError, match="date_format"):
        _load_edited(monkeypatch, "twitter_v1", lambda data: data.update(date_format=date_format))


@pytest.mark.parametrize(
    ("date_format", "expected"),
    [
        ("{year}-{month}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}", "2012-Sep-07T05:04:03"),
        ("{weekday:>5}|{day:3}|{hour!r}|{{literal}} 100%", "  Fri|  7|5|{literal} 100%"),
        ("{day}{day}", "77"),
    ],
)
def test_any_date_format_naming_the_fields_works(date_format: str, expected: str) -> None:
    assert Renderer({}, date_format).format_date(datetime(2012, 9, 7, 5, 4, 3, tzinfo=UTC)) == expected


# Serializers -----------------------------------------------------------------------------------------------

INVALID_XML_CHARS = [chr(c) for c in range(0x09)] + ["\x0b", "\x0c"] + [chr(c) for c in range(0x0E, 0x20)]
INVALID_XML_CHARS += ["\ufffe", "\uffff", "\ud800", "\udbff", "\udc00", "\udfff"]


def xml_text(text: str, **tree: Any) -> str:
    root = ET.fromstring(to_xml("r", {"t": text, **tree}))
    return root.findtext("t") or ""


@pytest.mark.parametrize("char", INVALID_XML_CHARS, ids=[f"U+{ord(c):04X}" for c in INVALID_XML_CHARS])
def test_xml_drops_characters_xml_cannot_carry(char: str) -> None:
    body = to_xml("r", {"t": f"a{char}b"})
    assert char.encode("utf-8", "surrogatepass") not in body
    assert xml_text(f"a{char}b") == "ab"


def test_xml_keeps_tab_newline_and_astral_characters() -> None:
    text = "a\tb\nc 😀 𝄞 \U0010fffd \ud7ff \ue000 \ufffd"
    body = to_xml("r", {"t": text})
    assert "😀".encode() in body and b"\t" in body
    assert xml_text(text) == text


# Not printable to Python, yet XML carries them: a string holding one takes the slow path and keeps it.
NONPRINTABLE_XML_CHARS = [
    "\x7f",
    "\x85",
    "\x9f",
    "\xa0",
    "\xad",
    "\u200b",
    "\u2028",
    "\u2029",
    "\u3000",
    "\ue000",
    "\U000e0001",
]


@pytest.mark.parametrize("char", NONPRINTABLE_XML_CHARS, ids=[f"U+{ord(c):04X}" for c in NONPRINTABLE_XML_CHARS])
def test_xml_keeps_characters_python_calls_unprintable(char: str) -> None:
    assert not char.isprintable()
    assert xml_text(f"a{char}b") == f"a{char}b"


def test_no_character_xml_cannot_carry_is_printable() -> None:
    """The serializer passes printable strings through unsearched: sound only while this holds, for every
    code point of the running Python's Unicode tables."""
    not_xml = serialize._NOT_XML_CHAR  # the pattern the slow path removes
    assert [hex(code) for code in range(0x110000) if not_xml.match(chr(code)) and chr(code).isprintable()] == []


def test_xml_keeps_carriage_return_in_the_document() -> None:
    body = to_xml("r", {"t": "a\rb"})
    # Either raw or as a character reference; a parser turns a raw one into "\n".
    assert b"a\rb" in body or b"a&#13;b" in body or b"a&#xD;b" in body


def test_xml_escapes_markup() -> None:
    body = to_xml("r", {"t": "<b>x & y</b> ]]> a>b"})
    assert b"<b>" not in body and b"</b>" not in body
    assert b"&lt;b&gt;x &amp; y&lt;/b&gt; ]]&gt; a&gt;b" in body
    assert xml_text("<b>x & y</b> ]]> a>b") == "<b>x & y</b> ]]> a>b"


def test_xml_none_booleans_numbers_lists_and_nesting() -> None:
    body = to_xml(
        "direct_message",
        {"empty": None, "yes": True, "no": False, "n": 42, "f": 1.5, "ids": [1, 2], "user": {"name": None, "id": 7}},
    )
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert body.endswith(b"\n")
    root = ET.fromstring(body)
    assert root.tag == "direct_message"
    empty = root.find("empty")
    assert empty is not None and empty.text is None and len(empty) == 0 and not empty.attrib
    assert root.findtext("yes") == "true"
    assert root.findtext("no") == "false"
    assert root.findtext("n") == "42"
    assert root.findtext("f") == "1.5"
    assert [e.text for e in root.findall("ids")] == ["1", "2"]
    user = root.find("user")
    assert user is not None and user.findtext("id") == "7"
    name = user.find("name")
    assert name is not None and name.text is None
    # Key order is kept.
    assert [child.tag for child in root] == ["empty", "yes", "no", "n", "f", "ids", "ids", "user"]


def test_xml_indent() -> None:
    assert b"\n  <t>x</t>" in to_xml("r", {"t": "x"}, indent="  ")
    assert b"\n <t>x</t>" in to_xml("r", {"t": "x"}, indent=" ")


def test_json_escape_slashes_escapes_every_slash() -> None:
    tree = {"url": "http://a/b//c", "path/key": ["/", "\\/", "x\\"], "n": 1, "none": None}
    plain = to_json(tree)
    escaped = to_json(tree, escape_slashes=True)
    assert b"http://a/b//c" in plain
    assert b"http:\\/\\/a\\/b\\/\\/c" in escaped
    # No "/" is left unescaped: removing every escaped one leaves none.
    assert b"/" not in escaped.replace(b"\\/", b"")
    assert escaped.count(b"/") == plain.count(b"/")
    assert orjson.loads(escaped) == orjson.loads(plain) == tree


def test_json_without_escaping_leaves_slashes() -> None:
    assert to_json({"u": "a/b"}) == b'{"u":"a/b"}'


_json_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text()


@given(st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=3)))
def test_json_escaped_slashes_round_trip(tree: Any) -> None:
    escaped = to_json({"v": tree}, escape_slashes=True)
    assert b"/" not in escaped.replace(b"\\/", b"")
    assert orjson.loads(escaped) == {"v": tree}


def _xml_char(ch: str) -> bool:
    """XML 1.0's Char production, written out independently of the serializer."""
    cp = ord(ch)
    return cp in (0x9, 0xA, 0xD) or 0x20 <= cp <= 0xD7FF or 0xE000 <= cp <= 0xFFFD or 0x10000 <= cp <= 0x10FFFF


_awkward = st.sampled_from(
    ["\x00", "\x07", "\x0b", "\x0c", "\x1f", "\r", "\n", "\t", "\r\n", "\ud800", "\udfff", "\ufffe", "\uffff",
     "<", ">", "&", "]]>", "&amp;", "'", '"', " ", "😀", "\U0010ffff", "\x7f", "\x85", "\u2028"]
)  # fmt: skip
_text = st.lists(st.one_of(st.characters(exclude_categories=()), _awkward), max_size=40).map("".join)


@given(_text)
@example("")
@example("  leading and trailing  ")
@example("\r\n\r")
@example("\r\x00\n")
@example("\ud83d\ude00")  # a surrogate pair written as two lone surrogates
def test_xml_text_round_trips_minus_invalid_characters(text: str) -> None:
    body = to_xml("r", {"t": text})
    parsed = ET.fromstring(body).findtext("t") or ""
    # Carriage returns are written as character references, so even XML's line-end normalization
    # (section 2.11) gives them back exactly.
    assert parsed == "".join(ch for ch in text if _xml_char(ch))


@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2090, 1, 1)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_a_date_formats_alike_in_any_zone_and_when_formatted_before(naive: datetime, minutes: int) -> None:
    """Kept formatted dates answer only for equal values: the same instant in another zone gives the same
    text, a naive value (UTC) its own."""
    r = Renderer({}, TWITTER_DATE)
    aware = naive.replace(tzinfo=UTC).astimezone(timezone(timedelta(minutes=minutes)))
    expected = Renderer({}, TWITTER_DATE).format_date(naive.replace(tzinfo=UTC))
    assert r.format_date(aware) == expected
    assert r.format_date(naive.replace(tzinfo=UTC)) == expected
    assert r.format_date(naive) == expected  # naive: taken as UTC
    assert r.format_date(aware + timedelta(seconds=1)) != expected


def test_kept_dates_are_bounded() -> None:
    r = Renderer({}, TWITTER_DATE)
    start = datetime(2012, 9, 7, tzinfo=UTC)
    for second in range(3 * template_module.DATE_CACHE_SIZE):
        assert r.format_date(start + timedelta(seconds=second)).endswith(f":{second % 60:02d} +0000 2012")
    assert len(r._dates) <= template_module.DATE_CACHE_SIZE
