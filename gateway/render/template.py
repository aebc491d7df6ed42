"""A tiny, compiled expression language for the shapes in mappings/*.toml.

Each template is an ordered TOML table: keys are output keys, in output order; values say where the value
comes from. A string is an expression; a TOML boolean, number or array is a constant; a table is a nested
object::

    id = "message.id|int"                   # a path into the render context, then filters
    sender = "sender|object(user)"          # another template of the same mapping, rendered nested
    hashtags = "entities.hashtags|each(hashtag)"
    lang = "'en'"                           # a quoted string constant
    url = "null"                            # JSON null / an empty XML element
    contributors_enabled = false            # a constant
    symbols = []                            # a constant array of scalars
    target = { recipient_id = "recipient.id" }   # a nested object, rendered from the same context
    created_timestamp = "message.created_at|millis|str"   # epoch milliseconds
    profile_image_url = "user.profile_image_url|avatar"   # the configured default avatar when none

Expressions are compiled once when the mapping loads, so a typo in a mapping stops start-up, not a request.
"""

from __future__ import annotations

import keyword
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from operator import attrgetter
from string import Formatter
from typing import Any

from gateway.render.serialize import SharedObject

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_FILTER = re.compile(r"(?P<name>[a-z_]+)(?:\((?P<arg>[^()]*)\))?")
_PATH = re.compile(r"[a-z_]+(?:\.[a-z_]+)*")

Getter = Callable[[Mapping[str, Any], "Renderer"], Any]


class MappingError(ValueError):
    """A mapping file that cannot be used; raised at start-up."""


#: Objects (users) kept rendered per renderer.
OBJECT_CACHE_SIZE = 1024

#: The types of attribute values an object is cached by: equal values of one of these types render alike
#: whatever the filters (a datetime once its time zone and fold are known too).
_KEY_TYPES = frozenset({str, int, bool, type(None), datetime})
#: The types of output values a cached object may hold: none can be changed in place.
_IMMUTABLE = frozenset({str, int, float, bool, type(None), datetime})


class Renderer:
    """Renders named templates of one format (json or xml) of one mapping.

    A template that reads nothing but attributes of its own value (a user: ``user.id``, ``user.name``, ...)
    renders the same object for the same attribute values, and the same user is in body after body; such
    objects are kept in a bounded memo, as ``SharedObject``s: every body holds the same one, which refuses
    changes, and the XML writer keeps its text on it. A value that is itself immutable (a frozen dataclass,
    as a ``User``) and is met again, the very same object, is answered without reading its attributes.
    """

    def __init__(
        self, templates: Mapping[str, Template], date_format: str, default_profile_image_url: str = ""
    ) -> None:
        self.templates = templates
        self.date_format = date_format
        #: What ``avatar`` gives a user without an image; fixed for the renderer's life, so objects that use
        #: it are still kept by their own attribute values.
        self.default_profile_image_url = default_profile_image_url
        self._readers = {
            name: _reader(attributes)
            for name, template in templates.items()
            if (attributes := template.own_attributes(name))
        }
        self._memo: OrderedDict[tuple[Any, ...], SharedObject] = OrderedDict()
        #: id(value) -> (value, template name, its object), for immutable values; holding the value keeps
        #: its id from being reused while the entry lasts.
        self._seen: dict[int, tuple[Any, str, SharedObject]] = {}
        positional = _positional(date_format)
        self._positional_date = None if positional is None else positional.format
        self._printf_date = _printf(date_format)

    def render(self, name: str, context: Mapping[str, Any]) -> dict[str, Any]:
        return self.templates[name].render(context, self)

    def render_object(self, name: str, value: Any) -> dict[str, Any]:
        """Template ``name`` for ``value``, as ``object(name)`` renders it: a ``SharedObject`` when kept."""
        seen = self._seen.get(id(value))
        if seen is not None and seen[0] is value and seen[1] == name:
            return seen[2]
        reader = self._readers.get(name)
        if reader is None:
            return self.render(name, {name: value})
        try:
            key = _memo_key(name, reader(value))
        except AttributeError:
            key = None  # rendering says what is missing
        if key is None:
            return self.render(name, {name: value})
        memo = self._memo
        shared = memo.get(key)
        if shared is not None:
            memo.move_to_end(key)
        else:
            tree = self.render(name, {name: value})
            if not _IMMUTABLE.issuperset(map(type, tree.values())):
                return tree
            shared = memo[key] = SharedObject(tree)
            if len(memo) > OBJECT_CACHE_SIZE:
                memo.popitem(last=False)
        if _is_frozen(type(value)):  # type: ignore[arg-type]  # a class is hashable; mypy checks its instances
            if len(self._seen) >= OBJECT_CACHE_SIZE:
                self._seen.clear()
            self._seen[id(value)] = (value, name, shared)
        return shared

    def format_date(self, value: datetime) -> str:
        """Legacy dates, always in English and UTC, whatever the process locale."""
        if value.tzinfo is not None and value.tzinfo is not UTC:
            value = value.astimezone(UTC)  # naive values are taken to be UTC already
        fields = (
            _WEEKDAYS[value.weekday()],
            _MONTHS[value.month - 1],
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.year,
        )  # in the order of _DATE_FIELDS
        if self._printf_date is not None:
            return self._printf_date % fields
        if self._positional_date is not None:
            return self._positional_date(*fields)
        return self.date_format.format(**dict(zip(_DATE_FIELDS, fields, strict=True)))


#: The fields a date format may name, in the order ``format_date`` passes them.
_DATE_FIELDS = ("weekday", "month", "day", "hour", "minute", "second", "year")


def _positional(date_format: str) -> str | None:
    """The date format with its fields by position instead of by name, which formats a date without
    building keyword arguments; None for a format it cannot rewrite (that one is used as written)."""
    parts = []
    try:
        parsed = list(Formatter().parse(date_format))
    except ValueError:
        return None
    for literal, field, spec, conversion in parsed:
        parts.append(literal.replace("{", "{{").replace("}", "}}"))
        if field is None:
            continue
        if field not in _DATE_FIELDS or "{" in (spec or ""):
            return None
        conversion = f"!{conversion}" if conversion else ""
        spec = f":{spec}" if spec else ""
        parts.append(f"{{{_DATE_FIELDS.index(field)}{conversion}{spec}}}")
    return "".join(parts)


#: A number's format spec that printf-style formatting writes alike: a width of up to three digits, perhaps
#: zero-padded, perhaps with the ``d`` that is the default anyway.
_PRINTF_NUMBER_SPEC = re.compile(r"(0?[0-9]{0,3})d?")


def _printf(date_format: str) -> str | None:
    """The date format as a printf-style format that takes the fields in ``format_date``'s order, which writes
    a date for about two thirds of what ``str.format`` costs (no format spec to parse per field); None for a
    format that does not name every field once and in that order, or that asks for more than a width on a
    number (that one is formatted by ``str.format``)."""
    try:
        parsed = list(Formatter().parse(date_format))
    except ValueError:
        return None
    parts: list[str] = []
    named: list[str] = []
    for literal, field, spec, conversion in parsed:
        parts.append(literal.replace("%", "%%"))
        if field is None:
            continue
        if conversion or field not in _DATE_FIELDS:
            return None
        if field in ("weekday", "month"):  # the two names; every other field is a number
            if spec:
                return None
            parts.append("%s")
        else:
            number = _PRINTF_NUMBER_SPEC.fullmatch(spec or "")
            if number is None:
                return None
            parts.append(f"%{number[1]}d")
        named.append(field)
    return "".join(parts) if tuple(named) == _DATE_FIELDS else None


@lru_cache(maxsize=64)
def _is_frozen(kind: type) -> bool:
    """Whether values of this type cannot change: frozen dataclasses."""
    params = getattr(kind, "__dataclass_params__", None)
    # mypy reads the class's __setattr__ as a bound method, which it is not here.
    overridden = kind.__setattr__ is not object.__setattr__  # type: ignore[comparison-overlap]
    return params is not None and bool(params.frozen) and overridden


def _reader(attributes: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    if len(attributes) == 1:
        attribute = attributes[0]
        return lambda value: (getattr(value, attribute),)
    return attrgetter(*attributes)


def _memo_key(name: str, values: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """What an object is cached by: its attribute values and their types (so that ``1`` and ``True``, equal
    in Python, are told apart), or None when a value is of a type not known to render alike when equal.

    Equal datetimes may still differ in time zone and fold (equality looks at the instant), so a datetime
    also keys by its fold and its time zone object: by identity, which the key keeps alive."""
    types = tuple(map(type, values))
    if not _KEY_TYPES.issuperset(types):
        return None
    if datetime in types:
        zones = tuple([(id(value.tzinfo), value.fold) for value in values if type(value) is datetime])
        return (name, values, types, zones)
    return (name, values, types)


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    #: The compiled template: one function building the whole object (see ``_Source``).
    function: Getter
    #: Every path the template reads, as (head, attribute, ...); None when it renders other templates too.
    paths: tuple[tuple[str, ...], ...] | None = None

    def render(self, context: Mapping[str, Any], renderer: Renderer) -> dict[str, Any]:
        return self.function(context, renderer)

    def own_attributes(self, name: str) -> tuple[str, ...]:
        """The attributes of its value the template reads when rendered as ``name``, if that is all it reads
        (no other context, not the value itself, no deeper path, no other template); else ().

        Its output is then a function of those attribute values alone."""
        if not self.paths or any(len(path) != 2 or path[0] != name for path in self.paths):
            return ()
        return tuple(dict.fromkeys(path[1] for path in self.paths))


class _Source:
    """A template compiled to Python: each value becomes an expression over ``ctx`` (the render context) and
    ``r`` (the renderer), and the template one function returning them all in a dict display, in the
    table's order. Rendering is then one call, where calling a closure per value and per filter made an
    object of forty keys cost forty to a hundred calls. Everything an expression refers to other than
    ``ctx`` and ``r`` (constants, filter functions, nested templates) is passed in by name, never written
    into the source; the only text that is, is a key or an attribute name, written by ``repr`` or checked
    to be an identifier."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {}
        self._temporaries = 0

    def refer(self, value: Any) -> str:
        """A name the source can use for ``value``."""
        name = f"_k{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def temporary(self) -> str:
        """A local name of its own for one intermediate value (an assignment expression's target)."""
        self._temporaries += 1
        return f"_t{self._temporaries}"

    def function(self, body: str) -> Getter:
        text = f"def compiled(ctx, r):\n    return {body}\n"
        scope = dict(self.namespace)
        exec(compile(text, "<mapping template>", "exec"), scope)  # noqa: S102 - source built here, see above
        return scope["compiled"]


def compile_template(name: str, table: Mapping[str, Any]) -> Template:
    source = _Source()
    items = [f"{key!r}: {_value_code(f'{name}.{key}', value, source)}" for key, value in table.items()]
    return Template(name, source.function("{" + ", ".join(items) + "}"), _paths(table))


def _paths(table: Mapping[str, Any]) -> tuple[tuple[str, ...], ...] | None:
    """The paths a (compiled, so valid) table reads, nested tables included; None if it names a template."""
    paths: list[tuple[str, ...]] = []
    for value in table.values():
        if isinstance(value, dict):
            nested = _paths(value)
            if nested is None:
                return None
            paths.extend(nested)
        elif isinstance(value, str):
            term, *filters = [part.strip() for part in value.split("|")]
            # Filters were checked when the template compiled: each one matches.
            if any(_FILTER.fullmatch(text)["name"] in ("object", "each") for text in filters):  # type: ignore[index]
                return None
            if not _literal("", term)[0]:
                paths.append(tuple(term.split(".")))
    return tuple(paths)


def compile_value(where: str, value: Any) -> Getter:
    """One value of a template on its own, as a function of the context and the renderer."""
    source = _Source()
    return source.function(_value_code(where, value, source))


def _value_code(where: str, value: Any, source: _Source) -> str:
    if isinstance(value, bool | int | float):
        return source.refer(value)
    if isinstance(value, dict):
        # A table is a nested object rendered from the same context (an event's message_create, say).
        nested = compile_template(where, value)
        return f"{source.refer(nested.function)}(ctx, r)"
    if isinstance(value, list):
        if any(not isinstance(item, bool | int | float | str) for item in value):
            raise MappingError(f"{where}: a constant array holds only numbers, booleans and strings")
        return f"list({source.refer(tuple(value))})"  # a new list each time: never shared between bodies
    if not isinstance(value, str):
        raise MappingError(f"{where}: expected an expression string or a constant, got {value!r}")
    term, *filters = [part.strip() for part in value.split("|")]
    code = _term_code(where, term, source)
    for text in filters:
        code = _filter_code(where, text, code, source)
    return code


def _literal(where: str, text: str) -> tuple[bool, Any]:
    if text == "null":
        return True, None
    if text in ("true", "false"):
        return True, text == "true"
    if re.fullmatch(r"-?[0-9]+", text):
        return True, int(text)
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return True, text[1:-1]
    return False, None


def _term_code(where: str, term: str, source: _Source) -> str:
    """A constant, or a path: its head from the context, then each attribute in turn, None once a step is."""
    is_literal, constant = _literal(where, term)
    if is_literal:
        return source.refer(constant)
    if not _PATH.fullmatch(term):
        raise MappingError(f"{where}: {term!r} is neither a constant nor a path")
    head, *attrs = term.split(".")
    code = f"ctx[{head!r}]"
    for attr in attrs:
        value = source.temporary()
        code = f"(None if ({value} := {code}) is None else {_attribute(value, attr)})"
    return code


def _attribute(value: str, attr: str) -> str:
    # A path's names are lower-case letters and underscores, which may still spell a keyword ("class").
    return f"{value}.{attr}" if not keyword.iskeyword(attr) else f"getattr({value}, {attr!r})"


def _filter_code(where: str, text: str, inner: str, source: _Source) -> str:
    match = _FILTER.fullmatch(text)
    if not match:
        raise MappingError(f"{where}: cannot read filter {text!r}")
    name, raw = match["name"], match["arg"]
    if name not in _FILTERS:
        raise MappingError(f"{where}: unknown filter {name!r} (known: {', '.join(sorted(_FILTERS))})")
    factory, wants = _FILTERS[name]
    if wants is None:
        if raw is not None:
            raise MappingError(f"{where}: filter {name!r} takes no argument")
        return factory(inner, None, source)
    if raw is None:
        raise MappingError(f"{where}: filter {name!r} needs an argument")
    raw = raw.strip()
    if wants == "name":
        if not re.fullmatch(r"[a-z_]+", raw):
            raise MappingError(f"{where}: filter {name!r} needs a template name, got {raw!r}")
        return factory(inner, raw, source)
    is_literal, constant = _literal(where, raw)
    if not is_literal or (wants == "string" and not isinstance(constant, str)):
        kind = "a quoted string" if wants == "string" else "a constant"
        raise MappingError(f"{where}: filter {name!r} needs {kind}, got {raw!r}")
    return factory(inner, constant, source)


#: A filter's code: from the code of the value it filters, its argument and the source it goes into.
FilterCode = Callable[[str, Any, _Source], str]


def _unless_null(apply: Callable[[str, Any, _Source], str]) -> FilterCode:
    """A filter that maps a non-null value (``apply`` writes how, given the name it is held in) and passes
    null through."""

    def code(inner: str, arg: Any, source: _Source) -> str:
        value = source.temporary()
        return f"(None if ({value} := {inner}) is None else {apply(value, arg, source)})"

    return code


def _plain(fn: Callable[[Any], Any]) -> FilterCode:
    """A filter that maps a non-null value through ``fn`` and passes null through."""
    return _unless_null(lambda value, _arg, source: f"{source.refer(fn)}({value})")


def _scheme(scheme: str) -> Callable[[str], str]:
    def convert(url: str) -> str:
        rest = url.split("://", 1)
        return f"{scheme}://{rest[1]}" if len(rest) == 2 else url

    return convert


def _millis(value: datetime) -> int:
    """Milliseconds since the epoch, as the v1.1 events API wrote ``created_timestamp``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MILLISECOND


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def _default(inner: str, arg: Any, source: _Source) -> str:
    value = source.temporary()
    return f"({source.refer(arg)} if ({value} := {inner}) is None else {value})"


def _avatar(inner: str, _arg: Any, source: _Source) -> str:
    """The value, or the renderer's default avatar URL when it is null or empty."""
    return f"({inner} or r.default_profile_image_url)"


def _contains(inner: str, arg: Any, source: _Source) -> str:
    value = source.temporary()
    return f"(isinstance(({value} := {inner}), str) and {source.refer(arg)} in {value})"


def _each(inner: str, arg: Any, source: _Source) -> str:
    return f"{source.refer(_render_each)}(r, {arg!r}, {inner})"


def _render_each(r: Renderer, name: str, values: Any) -> list[dict[str, Any]]:
    if not values:  # most messages' entities: no comprehension (a call of its own) for nothing
        return []
    return [r.render(name, {name: item}) for item in values]


# Each filter with the argument it takes: None (no argument), "constant", "string" (quoted) or "name"
# (a template of the same mapping and format).
_FILTERS: dict[str, tuple[FilterCode, str | None]] = {
    "int": (_plain(int), None),
    "str": (_plain(str), None),
    "http": (_plain(_scheme("http")), None),
    "https": (_plain(_scheme("https")), None),
    "span": (_plain(lambda entity: [entity.start, entity.end]), None),
    "date": (_unless_null(lambda value, _arg, _source: f"r.format_date({value})"), None),
    "millis": (_plain(_millis), None),
    "default": (_default, "constant"),
    "avatar": (_avatar, None),
    "contains": (_contains, "string"),
    "object": (_unless_null(lambda value, name, _source: f"r.render_object({name!r}, {value})"), "name"),
    "each": (_each, "name"),
}


def check_references(templates: Mapping[str, Template], raw: Mapping[str, Mapping[str, Any]], where: str) -> None:
    """Every object()/each() names a template that exists in the same format."""
    pending = [(f"{where}.{name}", table) for name, table in raw.items()]
    while pending:
        path, table = pending.pop()
        for key, value in table.items():
            if isinstance(value, dict):
                pending.append((f"{path}.{key}", value))
            elif isinstance(value, str):
                for ref in re.findall(r"\|\s*(?:object|each)\(\s*([a-z_]+)\s*\)", value):
                    if ref not in templates:
                        raise MappingError(f"{path}.{key}: no template named {ref!r}")
