"""Serializers only: a tree of dicts, lists and scalars in, bytes out. Never string templates.

XML 1.0 cannot carry most control characters at all (not even escaped), so they are dropped; everything
else is escaped by the XML writer.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import xmltodict

_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def to_json(tree: Any, *, escape_slashes: bool = False) -> bytes:
    body = orjson.dumps(tree)
    # "/" only ever occurs inside JSON strings, so escaping it everywhere is exact (a PHP json_encode habit).
    return body.replace(b"/", b"\\/") if escape_slashes else body


def _xml_value(value: Any) -> Any:
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
    document = {root: _xml_value(tree)}
    text = xmltodict.unparse(document, pretty=True, indent=indent, short_empty_elements=True, encoding="UTF-8")
    # A raw CR would reach the client as LF (XML parsers normalize line ends); a character reference keeps
    # it. The writer's own line breaks are LF only, so every CR here is content.
    return text.replace("\r", "&#13;").encode("utf-8") + b"\n"
