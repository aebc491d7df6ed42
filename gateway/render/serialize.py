"""Serializers only: a tree of dicts, lists and scalars in, bytes out. Never string templates.

JSON is orjson's. XML is written here, in the layout the legacy servers used (and xmltodict's ``unparse``
writes, ``pretty=True, short_empty_elements=True``, which the tests hold it to):

- a key is a child element, ``@name`` an attribute, ``#text`` the element's own text; order is kept;
- a list is one element per item, an empty list no element; a dict is an element with children; an item
  is a scalar or a dict;
- None and the empty string are an empty element (``<name/>``), booleans ``true`` and ``false``, any other
  scalar its ``str()``;
- text has ``&``, ``<`` and ``>`` escaped and a CR written as ``&#13;`` (a parser would read a raw one as
  LF); characters XML 1.0 cannot carry at all, not even escaped, are dropped;
- one element per line, indented by depth; an element's own text beside children comes after them.

Names are written as given: the mappings' keys, checked when a mapping loads (``mapping.py``).

A ``SharedObject`` (a rendered user, kept by the renderer) is written once per place in a document (its
name, depth and indent) and that text is kept on the object itself, so the many bodies that hold the same
user do not write it again.
"""

from __future__ import annotations

import re
from typing import Any
from xml.sax.saxutils import quoteattr

import orjson

_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_CONTAINERS = (dict, list)
_JSON_BASES: tuple[type[Any], ...] = (str, int, float, dict, list, tuple)
_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


class SharedObject(dict):
    """An object (a user, or a message as a list shows it) that many bodies hold at once, as a renderer keeps
    it. It refuses every change (``dict(obj)`` is a copy that does not), and what it holds is never changed in
    place (a dialect that extends a part copies it), so the text written for it stays true; ``written`` holds
    that text, by where in an XML document it was written, and ``json`` its JSON once written."""

    __slots__ = ("json", "written")

    def __init__(self, items: dict[str, Any]) -> None:
        super().__init__(items)
        self.written: dict[tuple[str, int, str], str] = {}
        self.json: orjson.Fragment | None = None

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a shared rendered object cannot be changed; change a copy, dict(obj)")

    __setitem__ = __delitem__ = __ior__ = _refuse
    pop = popitem = clear = update = setdefault = _refuse


#: Subclasses of the types orjson knows go to ``_json_default``.
_SUBCLASSES = orjson.OPT_PASSTHROUGH_SUBCLASS


def to_json(tree: Any, *, escape_slashes: bool = False) -> bytes:
    body = orjson.dumps(tree, default=_json_default, option=_SUBCLASSES)
    # "/" only ever occurs inside JSON strings, so escaping it everywhere is exact (a PHP json_encode habit).
    return body.replace(b"/", b"\\/") if escape_slashes else body


def _json_default(value: Any) -> Any:
    """What orjson writes for a subclass of a type it knows: a shared object's JSON, written once and kept
    on it; any other as its base type."""
    if type(value) is SharedObject:
        if value.json is None:
            # As a plain dict, so that the objects it holds are written through here too.
            value.json = orjson.Fragment(orjson.dumps(dict(value), default=_json_default, option=_SUBCLASSES))
        return value.json
    base = next((kind for kind in _JSON_BASES if isinstance(value, kind)), None)
    if base is None:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")
    return base(value)


def to_xml(root: str, tree: dict[str, Any], *, indent: str = " ") -> bytes:
    out = [_DECLARATION]
    _write(out, root, tree, 0, indent)
    out.append("\n")
    return "".join(out).encode("utf-8")


def _write(out: list[str], name: str, value: Any, depth: int, indent: str) -> None:
    """Element ``name`` holding ``value`` at ``depth`` (a list: one for each item), each followed by a line
    break but for the root."""
    if type(value) is SharedObject:
        place = (name, depth, indent)
        text = value.written.get(place)
        if text is None:
            piece: list[str] = []
            _write_object(piece, name, value, depth, indent)
            text = value.written[place] = "".join(piece)
        out.append(text)
    elif isinstance(value, dict):
        _write_object(out, name, value, depth, indent)
    elif isinstance(value, list):
        for item in value:
            _write(out, name, item, depth, indent)
    else:
        out.append(_leaf(name, value, indent * depth, "\n" if depth else ""))


def _write_object(out: list[str], name: str, value: dict[str, Any], depth: int, indent: str) -> None:
    attributes = ""
    text = ""
    children: list[str] = []
    margin = indent * depth
    inner = margin + indent
    for key, item in value.items():
        if isinstance(item, _CONTAINERS):
            _write(children, key, item, depth + 1, indent)
        elif key == "#text":
            text = _text(item)
        elif key[0] == "@":
            attributes += f" {key[1:]}={quoteattr(_attribute(item))}"
        else:
            children.append(_leaf(key, item, inner, "\n"))
    end = "\n" if depth else ""
    if children:
        out.append(f"{margin}<{name}{attributes}>\n")
        out.extend(children)
        out.append(f"{text}{margin}</{name}>{end}")
    elif text:
        out.append(f"{margin}<{name}{attributes}>{text}</{name}>{end}")
    else:
        out.append(f"{margin}<{name}{attributes}/>{end}")


def _leaf(name: str, value: Any, margin: str, end: str) -> str:
    """Element ``name`` holding the scalar ``value``."""
    text = _text(value)
    return f"{margin}<{name}>{text}</{name}>{end}" if text else f"{margin}<{name}/>{end}"


def _text(value: Any) -> str:
    """``value`` as text between tags: escaped, a CR as a character reference, without the characters XML
    cannot carry (each of them unprintable to Python, and most text is printable: that test is far cheaper
    than the search)."""
    text = _string(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text if text.isprintable() else _NOT_XML_CHAR.sub("", text).replace("\r", "&#13;")


def _string(value: Any) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _attribute(value: Any) -> str:
    text = _string(value)
    return text if text.isprintable() else _NOT_XML_CHAR.sub("", text)
