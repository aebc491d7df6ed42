"""Serializers only: a tree of dicts, lists and scalars in, bytes out. Never string templates.

XML trees follow xmltodict's conventions: a list repeats its element, ``"@name"`` is an attribute, ``"#text"``
the element's text, None an empty element. The tree is built and written by lxml (C; a pure-Python writer
cost more than the rest of a StatusNet destroy, see docs/PERFORMANCE.md), pretty-printed with one indent per
level. XML 1.0 cannot carry most control characters at all (not even escaped), so they are dropped;
everything else is escaped by the XML writer.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from lxml import etree

_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def to_json(tree: Any, *, escape_slashes: bool = False) -> bytes:
    body = orjson.dumps(tree)
    # "/" only ever occurs inside JSON strings, so escaping it everywhere is exact (a PHP json_encode habit).
    return body.replace(b"/", b"\\/") if escape_slashes else body


_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def _xml_text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return _NOT_XML_CHAR.sub("", str(value))


def _fill(element: etree._Element, tree: dict[str, Any]) -> None:
    for key, value in tree.items():
        if key.startswith("@"):
            if value is not None:
                element.set(key[1:], _xml_text(value))
        elif key == "#text":
            if value is not None:
                element.text = _xml_text(value) or None
        else:
            for item in value if isinstance(value, list) else (value,):
                child = etree.SubElement(element, key)
                if isinstance(item, dict):
                    _fill(child, item)
                elif item is not None:
                    child.text = _xml_text(item) or None  # "" is an empty element, as None is


def to_xml(root: str, tree: dict[str, Any], *, indent: str = " ") -> bytes:
    element = etree.Element(root)
    _fill(element, tree)
    etree.indent(element, space=indent)
    # lxml writes a carriage return in text as "&#13;", so it reaches the client as CR, not as a line end.
    return _DECLARATION + etree.tostring(element, encoding="UTF-8", xml_declaration=False) + b"\n"
