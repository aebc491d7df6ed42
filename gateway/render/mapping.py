"""Loading a dialect's mapping file (mappings/NAME.toml) into compiled templates and error specs."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from gateway.config import DEFAULT_PROFILE_IMAGE_URL
from gateway.errors import ERROR_KINDS
from gateway.render.template import MappingError, Renderer, check_references, compile_template

#: What an XML template's keys may be: element names as the legacy servers spelled them (the XML writer
#: writes names as given).
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")

ERROR_STYLES = ("twitter", "statusnet")


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    status: int
    code: int | None
    message: str


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    limit: str
    remaining: str
    reset: str


@dataclass(frozen=True, slots=True)
class DialectMapping:
    name: str
    error_style: str
    errors: dict[str, ErrorSpec]
    json: Renderer
    xml: Renderer | None
    json_escape_slashes: bool
    xml_indent: str
    rate_limit_headers: RateLimitHeaders
    www_authenticate: str | None


def _read(name: str) -> dict[str, Any]:
    try:
        text = resources.files("gateway.mappings").joinpath(f"{name}.toml").read_text("utf-8")
    except FileNotFoundError:
        raise MappingError(f"no mapping named {name!r}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"mappings/{name}.toml: {exc}") from None
    base = data.pop("extends", None)
    return _merge(_read(base), data) if base else data


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _renderer(
    name: str, fmt: str, section: dict[str, Any] | None, date_format: str, default_profile_image_url: str
) -> Renderer | None:
    if section is None:
        return None
    raw = section.get("templates", {})
    if fmt == "xml":
        _check_xml_names(raw, f"{name}.xml.templates")
    templates = {tname: compile_template(f"{name}.{fmt}.{tname}", table) for tname, table in raw.items()}
    check_references(templates, raw, f"{name}.{fmt}")
    return Renderer(templates, date_format, default_profile_image_url)


def _check_xml_names(tables: dict[str, Any], where: str) -> None:
    for key, value in tables.items():
        if not _XML_NAME.fullmatch(key):
            raise MappingError(f"{where}: {key!r} is not an XML element name")
        if isinstance(value, dict):
            _check_xml_names(value, f"{where}.{key}")


def _check_date_format(date_format: str, where: str) -> None:
    """A date format that names only the fields ``format_date`` gives, in a spec ``str.format`` accepts."""
    try:
        Renderer({}, date_format).format_date(datetime(2012, 9, 7, 5, 4, 3, tzinfo=UTC))
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        raise MappingError(f"{where}: date_format {date_format!r} cannot be used ({exc!r})") from None


def load_mapping(name: str, *, default_profile_image_url: str = DEFAULT_PROFILE_IMAGE_URL) -> DialectMapping:
    """The mapping named ``name``; ``default_profile_image_url`` is what its ``avatar`` filter gives a user
    without an image (``[render] default_profile_image_url``)."""
    data = _read(name)
    where = f"mappings/{name}.toml"
    try:
        style = data["error_style"]
        if style not in ERROR_STYLES:
            raise MappingError(f"{where}: error_style must be one of {ERROR_STYLES}")
        errors = {
            kind: ErrorSpec(spec["status"], spec.get("code"), spec["message"]) for kind, spec in data["errors"].items()
        }
        missing = set(ERROR_KINDS) - errors.keys()
        if missing:
            raise MappingError(f"{where}: no [errors.*] for {', '.join(sorted(missing))}")
        date_format = data["date_format"]
        _check_date_format(date_format, where)
        json_renderer = _renderer(name, "json", data.get("json", {}), date_format, default_profile_image_url)
        assert json_renderer is not None
        headers = data["rate_limit_headers"]
        return DialectMapping(
            name=name,
            error_style=style,
            errors=errors,
            json=json_renderer,
            xml=_renderer(name, "xml", data.get("xml"), date_format, default_profile_image_url),
            json_escape_slashes=bool(data.get("json", {}).get("escape_slashes", False)),
            xml_indent=data.get("xml", {}).get("indent", " "),
            rate_limit_headers=RateLimitHeaders(headers["limit"], headers["remaining"], headers["reset"]),
            www_authenticate=data.get("www_authenticate"),
        )
    except KeyError as exc:
        raise MappingError(f"{where}: missing key {exc}") from None
