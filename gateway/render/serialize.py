"""Serializers only: a tree of dicts, lists and scalars in, bytes out. Never string templates.

XML 1.0 cannot carry most control characters at all (not even escaped), so they are dropped; everything
else is escaped by the XML writer.

The XML writer is costly per element, and most of a direct message body is its two user objects and the
ids and screen names of its sender and recipient, which repeat from one body to the next. So a document is
written in pieces, every one of them by the XML writer itself: the declaration and the root's own tags;
each child element with printable text (the ids, dates, names and text of a body) as its tags, written by the
writer once per name and depth and kept with the names of elements seen at that depth, around its text
escaped by the function the writer escapes text with; each other child with a plain value (an integer, a
boolean, None, an empty or unprintable string) taken from a bounded cache keyed by its name, its value as
given with the value's type, and its depth (a long string is written each time instead), and written the
same way; each object-valued child (a user) that is a ``SharedObject`` written once and kept on the object
itself, any other taken from another bounded cache keyed by its content, its name and its depth; and runs of
the other children (lists of plain values, comments, ...) written together. A piece written at depth d with
the same indent is exactly the text it takes inside the whole document, so the pieces put together are the
document the writer would have written in one go.

JSON is written by orjson in one call; a ``SharedObject`` in it (a user) is written by orjson once, and its
text then goes into every body that holds the object as it stands (an ``orjson.Fragment``).
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from functools import lru_cache
from typing import Any, cast
from xml.sax.saxutils import escape

import orjson
import xmltodict

_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

#: Object-valued children kept written; a user's piece is about a kilobyte, its key about as much again.
FRAGMENT_CACHE_SIZE = 1024
#: Children with a plain value other than printable text kept written, one per name, value (with its type),
#: depth and indent. Kept apart from the objects, so that unique values never push a user out. A piece is
#: its value escaped plus its tags.
CHILD_CACHE_SIZE = 4096
#: Longer strings are written each time instead (still on their own): a long text is seldom repeated, and
#: this bounds an entry to about 3,000 characters, key and escaped piece (ids, names, dates: under 100).
CHILD_CACHE_MAX_LENGTH = 512
#: Element tags kept written: one per element name, attribute set and depth.
SHELL_CACHE_SIZE = 64

_TEXT = "#text"
_ATTR = "@"
_COMMENT = "#comment"
#: The one child of a shell: only the writer's own markup can spell ``<x/>``, since text and attribute
#: values have their ``<`` escaped.
_SLOT = "x"
_SLOT_TAG = f"<{_SLOT}/>\n"
#: Stands for an element's text while its tags are written: nothing the writer escapes, and no character it
#: puts in tags or layout.
_TEXT_MARK = "\x01text\x01"
#: Value types whose equal values are written alike: a child or an object holding only these is cached by
#: its values as given (with their types, since 1 and True are equal in Python), before they are made
#: XML-ready. Exact types: a subclass may be written differently (and floats are not: 0.0 == -0.0).
_PLAIN_TYPES = frozenset({str, int, bool, type(None)})


class SharedObject(dict):
    """An object (a user) that many bodies hold at once, as a renderer keeps it: it refuses every change
    (``dict(obj)`` is a copy that does not), so what a serializer wrote for it once stays true, and the
    serializer keeps that in ``written``."""

    __slots__ = ("written",)

    def __init__(self, items: dict[str, Any]) -> None:
        super().__init__(items)
        self.written: dict[Hashable, Any] = {}

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a shared rendered object cannot be changed; change a copy, dict(obj)")

    __setitem__ = __delitem__ = __ior__ = _refuse
    pop = popitem = clear = update = setdefault = _refuse


def to_json(tree: Any, *, escape_slashes: bool = False) -> bytes:
    body = _dumps(tree)
    # "/" only ever occurs inside JSON strings, so escaping it everywhere is exact (a PHP json_encode habit).
    return body.replace(b"/", b"\\/") if escape_slashes else body


#: Where a ``SharedObject`` keeps its JSON text: never a key the XML writer uses (those are tuples).
_JSON = "json"
#: The types orjson hands a subclass of to ``default`` when passing subclasses through, each made again as
#: the type itself; a ``SharedObject`` is caught before, and ``bool`` (an int) never comes.
_JSON_BASES: tuple[type[Any], ...] = (dict, list, str, int)


def _dumps(tree: Any) -> bytes:
    """The tree as orjson writes it, subclasses of JSON types and shared objects through ``_json_default``."""
    return orjson.dumps(tree, default=_json_default, option=orjson.OPT_PASSTHROUGH_SUBCLASS)


def _json_default(value: Any) -> Any:
    """What orjson writes for a value it passes through: a ``SharedObject`` (a user) as its JSON text, written
    once and then copied into every body as it stands (``orjson.Fragment``); any other subclass of a JSON type
    as that type, as orjson writes it by default."""
    if type(value) is SharedObject:
        fragment = value.written.get(_JSON)
        if fragment is None:
            fragment = value.written[_JSON] = orjson.Fragment(_dumps(dict(value)))
        return fragment
    for base in _JSON_BASES:
        if isinstance(value, base):
            return base(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _xml_value(value: Any) -> Any:
    """The tree as the XML writer gets it: only dicts, lists, strings and None; booleans in lower case."""
    if type(value) is str:  # most values: checked first
        # A printable string (no Cc, Cf, Cs, Co, Cn, Zl, Zp, nor Zs but the space) holds none of the
        # characters XML cannot carry, all of them Cc, Cs or Cn; the test is far cheaper than the search.
        return value if value.isprintable() else _NOT_XML_CHAR.sub("", value)
    if value is None:
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict):
        return {key: _xml_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_xml_value(item) for item in value]
    return _NOT_XML_CHAR.sub("", str(value))


def to_xml(root: str, tree: dict[str, Any], *, indent: str = " ") -> bytes:
    if isinstance(tree, dict) and isinstance(indent, str) and (indent == "" or indent.isspace()):
        text = _element(root, tree, 0, indent, document=True)
    else:
        text = _unparse({root: _xml_value(tree)}, 0, indent, document=True)
    # A raw CR would reach the client as LF (XML parsers normalize line ends); a character reference keeps
    # it. The writer's own line breaks are LF only, so every CR here is content. (Looking first is worth it:
    # ``in`` scans a 2 KB body in 30 ns, ``replace`` takes 800 to find nothing.)
    if "\r" in text:
        text = text.replace("\r", "&#13;")
    return text.encode("utf-8") + b"\n"


def _unparse(elements: dict[Any, Any], depth: int, indent: str, *, document: bool = False) -> str:
    """Elements written at ``depth``, as they read inside a document (or a whole document at depth 0)."""
    return xmltodict.unparse(
        elements,
        full_document=document,
        depth=depth,
        pretty=True,
        indent=indent,
        short_empty_elements=True,
        encoding="UTF-8",
    )


def _element(name: str, value: dict[Any, Any], depth: int, indent: str, *, document: bool = False) -> str:
    """Element ``name`` with children and attributes ``value`` (as given, not yet XML-ready) at ``depth``,
    exactly as the writer puts it in a document, written in pieces: its tags, cached children with plain
    values, cached objects, list items that are objects (the messages of a list) assembled the same way,
    and runs of the remaining children. The children are written first, in one pass that also collects
    the attributes and text its tags carry (they may come anywhere among the children)."""
    tag_items: list[tuple[Any, Any]] = []  # attributes and text: what the element's own tags carry
    pieces: list[str] = [""]  # the head goes first, once the tags are known
    run: dict[Any, Any] = {}
    inner = depth + 1
    names = _names_at(inner, indent)
    for key, item in value.items():
        kind = type(item)
        if kind is str and item and type(key) is str and (tags := names.get(key)) is not None and item.isprintable():
            # Printable text of a known element: its tags around it, escaped as _write_child escapes it.
            if run:
                pieces.append(_unparse(run, inner, indent))
                run = {}
            if "&" in item or "<" in item or ">" in item:
                item = escape(item)
            pieces.append(tags[0] + item + tags[1])
            continue
        if kind in _PLAIN_TYPES and ((key in names and type(key) is str) or _element_name(key, names, inner, indent)):
            if run:
                pieces.append(_unparse(run, inner, indent))
                run = {}
            if kind is str and len(item) > CHILD_CACHE_MAX_LENGTH:
                pieces.append(_write_child(key, item, kind, inner, indent))
            else:
                # A class is hashable; mypy checks its instances' __hash__ instead.
                pieces.append(_cached_child(key, item, kind, inner, indent))  # type: ignore[arg-type]
            continue
        if isinstance(key, str) and (key == _TEXT or key.startswith(_ATTR)):
            tag_items.append((key, _xml_value(item)))
            continue
        if isinstance(item, list) and not item:
            continue  # the writer leaves an empty list out altogether
        if type(key) is not str or key == _COMMENT or not (isinstance(item, dict) or _has_object(item)):
            run[key] = _xml_value(item)
            continue
        if run:
            pieces.append(_unparse(run, inner, indent))
            run = {}
        if isinstance(item, dict):
            pieces.append(_fragment(key, item, inner, indent))
            continue
        plain: list[Any] = []
        for entry in item:
            if isinstance(entry, dict):
                if plain:
                    pieces.append(_unparse({key: plain}, inner, indent))
                    plain = []
                pieces.append(_element(key, entry, inner, indent))
            else:
                plain.append(_xml_value(entry))
        if plain:
            pieces.append(_unparse({key: plain}, inner, indent))
    if run:
        pieces.append(_unparse(run, inner, indent))
    if len(pieces) == 1:  # no children: one tag, perhaps short
        return _unparse({name: _xml_value(value)}, depth, indent, document=document)
    pieces[0], tail = _shell(name, tuple(tag_items), depth, indent, document)
    pieces.append(tail)
    return "".join(pieces)


#: Per depth and indent, the names of child elements seen there, each with the tags around its text (None
#: when they cannot be cut out): at most this many names per depth and indent (and SHELL_CACHE_SIZE of those).
ELEMENT_NAMES_SIZE = 1024
_ELEMENT_NAMES: dict[tuple[int, str], dict[str, tuple[str, str] | None]] = {}


def _names_at(depth: int, indent: str) -> dict[str, tuple[str, str] | None]:
    names = _ELEMENT_NAMES.get((depth, indent))
    if names is None:
        if len(_ELEMENT_NAMES) >= SHELL_CACHE_SIZE:
            _ELEMENT_NAMES.clear()
        names = _ELEMENT_NAMES[(depth, indent)] = {}
    return names


def _element_name(key: Any, names: dict[str, tuple[str, str] | None], depth: int, indent: str) -> bool:
    """Whether a child named ``key`` is an element (not text, an attribute or a comment); if so, kept in
    ``names`` with its text's tags, so that the next body's children of that name skip the checks and,
    with printable text, the cache of children. A name XML cannot carry raises ValueError, as writing it does."""
    if type(key) is not str or key in (_TEXT, _COMMENT) or key.startswith(_ATTR):
        return False
    tags = _text_tags(key, depth, indent)
    if len(names) >= ELEMENT_NAMES_SIZE:
        names.clear()
    names[key] = tags
    return True


def _has_object(item: Any) -> bool:
    """A list with an object among its items: each object is then an element assembled on its own."""
    return isinstance(item, list) and any(isinstance(entry, dict) for entry in item)


def _shell(
    name: str, tag_items: tuple[tuple[Any, Any], ...], depth: int, indent: str, document: bool
) -> tuple[str, str]:
    try:
        return _cached_shell(name, tag_items, depth, indent, document)
    except TypeError:  # an attribute given as a dict or list: not hashable, written every time
        return _write_shell(name, tag_items, depth, indent, document)


def _write_shell(
    name: str, tag_items: tuple[tuple[Any, Any], ...], depth: int, indent: str, document: bool
) -> tuple[str, str]:
    """The text before and after the children of an element that has children: the writer's own, found by
    writing the element around a single empty child and cutting that child out."""
    text = _unparse({name: {**dict(tag_items), _SLOT: None}}, depth, indent, document=document)
    at = text.index(_SLOT_TAG)
    child_indent = (depth + 1) * indent
    if text[at - len(child_indent) : at] != child_indent:  # pragma: no cover - the writer's layout changed
        raise AssertionError("unexpected XML layout")
    return text[: at - len(child_indent)], text[at + len(_SLOT_TAG) :]


_cached_shell = lru_cache(maxsize=SHELL_CACHE_SIZE)(_write_shell)


def _write_child(name: str, value: Any, kind: type, depth: int, indent: str) -> str:
    """Element ``name`` with the plain ``value`` of type ``kind`` (as given, not yet XML-ready) at ``depth``.
    ``kind`` is part of the cache key only: 1 and True are equal in Python but written differently.

    An element with text is its tags, written by the XML writer once per name, depth and indent, around the
    text escaped by the function the writer itself escapes text with; an empty one is written whole."""
    text = _xml_value(value)
    if text:
        tags = _text_tags(name, depth, indent)
        if tags is not None:
            if "&" in text or "<" in text or ">" in text:  # all that escape() changes: most text has none
                text = escape(text)
            return tags[0] + text + tags[1]
    return _unparse({name: text}, depth, indent)


@lru_cache(maxsize=SHELL_CACHE_SIZE)
def _text_tags(name: str, depth: int, indent: str) -> tuple[str, str] | None:
    """The text before and after the text of element ``name`` at ``depth``: the writer's own, found by
    writing the element around a marker and cutting the marker out (None if the marker does not come out
    exactly once, as it then cannot be told apart)."""
    head, *tail = _unparse({name: _TEXT_MARK}, depth, indent).split(_TEXT_MARK)
    return (head, tail[0]) if len(tail) == 1 else None


_cached_child = lru_cache(maxsize=CHILD_CACHE_SIZE)(_write_child)


def _fragment(name: str, value: dict[Any, Any], depth: int, indent: str) -> str:
    """Element ``name`` with the object ``value`` at ``depth``: for a shared object, what was written for it
    before at that name and depth; else from the cache when the same content was written there before."""
    if type(value) is SharedObject:
        where = (name, depth, indent)
        text = value.written.get(where)
        if text is None:
            text = value.written[where] = _content_fragment(name, dict(value), depth, indent)
        return text
    return _content_fragment(name, value, depth, indent)


def _content_fragment(name: str, value: dict[Any, Any], depth: int, indent: str) -> str:
    if type(value) is dict:
        values = tuple(value.values())
        types = tuple(map(type, values))
        if _PLAIN_TYPES.issuperset(types):
            return _cached_fragment(name, (tuple(value), values, types), True, depth, indent)
    return _cached_fragment(name, _freeze(_xml_value(value)), False, depth, indent)


@lru_cache(maxsize=FRAGMENT_CACHE_SIZE)
def _cached_fragment(name: str, content: Hashable, plain: bool, depth: int, indent: str) -> str:
    """``content`` is an object of plain values as (keys, values, types), or else a frozen XML-ready tree."""
    if plain:
        keys, values, _types = cast("tuple[tuple[str, ...], tuple[Any, ...], Any]", content)
        value = _xml_value(dict(zip(keys, values, strict=True)))
    else:
        value = _thaw(content)
    return _unparse({name: value}, depth, indent)


class _ListMark:
    """Starts the frozen form of a list, so that no list freezes like an object (an object's frozen form
    is a tuple of key and value pairs)."""

    def __repr__(self) -> str:
        return "<list>"


_LIST = _ListMark()


def _freeze(value: Any) -> Any:
    """A hashable form of an XML-ready subtree; two subtrees freeze alike only if they are alike."""
    kind = type(value)
    if kind is dict:
        return tuple([(key, _freeze(item)) for key, item in value.items()])
    if kind is list:
        return (_LIST, *[_freeze(item) for item in value])
    return value


def _thaw(frozen: Any) -> Any:
    if type(frozen) is not tuple:
        return frozen
    if frozen and frozen[0] is _LIST:
        return [_thaw(item) for item in frozen[1:]]
    return {key: _thaw(item) for key, item in frozen}
