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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

from gateway.render.serialize import SharedObject

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_FILTER = re.compile(r"(?P<name>[a-z_]+)(?:\((?P<arg>[^()]*)\))?")
_PATH = re.compile(r"[a-z_]+(?:\.[a-z_]+)*")

Getter = Callable[[Mapping[str, Any], "Renderer"], Any]


class MappingError(ValueError):
    """A mapping file that cannot be used; raised at start-up."""


#: Rendered objects (users) kept per renderer.
OBJECT_CACHE_SIZE = 1024
#: Formatted dates kept per renderer (more than an inbox page of 800 messages).
DATE_CACHE_SIZE = 1024
#: Renders of a whole context (a message as a list shows it) kept per renderer by ``render_kept``: ten
#: inbox pages of 50, each message with its written text, about 7 KB (JSON) to 10 KB (XML) of it.
KEPT_RENDER_SIZE = 512

#: The types of attribute values an object is kept for: equal values of one of these types render alike
#: whatever the filters (a datetime once its time zone and fold are known too).
_KEY_TYPES = frozenset({str, int, bool, type(None), datetime})
#: The types of output values a kept object may hold: none can be changed in place.
_IMMUTABLE = frozenset({str, int, float, bool, type(None), datetime})


class Renderer:
    """Renders named templates of one format (json or xml) of one mapping.

    A template that reads nothing but attributes of its own value (a user: ``user.id``, ``user.name``, ...)
    renders the same object for equal values, and the same user is in body after body. So ``object(name)``
    keeps what it renders for a value that cannot change (a frozen dataclass, as ``User``, which hashes and
    compares by its fields) in one bounded cache, as a ``SharedObject``: every body holds the same one, which
    refuses changes, and the XML writer keeps its text on it. A user with other attribute values is another
    entry, rendered afresh.
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
        #: (template name, value) -> (the value it was rendered for, the object).
        self._objects: dict[tuple[str, Any], tuple[Any, SharedObject]] = {}
        #: Dates as formatted lately: a list shows the same messages call after call.
        self._dates: dict[datetime, str] = {}
        #: (template name, the context's names, the id of each of its values) -> (the values, the object).
        self._kept: dict[tuple[Any, ...], tuple[tuple[Any, ...], SharedObject]] = {}

    def render(self, name: str, context: Mapping[str, Any]) -> dict[str, Any]:
        return self.templates[name].render(context, self)

    def render_kept(self, name: str, context: Mapping[str, Any]) -> dict[str, Any]:
        """Template ``name`` for ``context``, kept while the context holds the very objects it was rendered for.

        A client polling its inbox reads the same page again and again, and the service hands over the same
        ``DirectMessage`` and ``User`` objects for a page it learned as it is now. For a context of frozen
        dataclasses (the model's, whose fields hold nothing that changes), the render is kept by their
        identities as a ``SharedObject``, whose JSON and XML are then written once rather than once per list.
        What is kept holds its values, so no other object can take their identity meanwhile; an equal object
        is another key. A context with any other value is rendered afresh."""
        key = (name, *context, *map(id, context.values()))
        kept = self._kept.get(key)
        if kept is not None:  # the entry holds the objects it was rendered for: no other has their ids
            return kept[1]
        values = tuple(context.values())
        if not all(_is_frozen(type(value)) for value in values):
            return self.render(name, context)
        shared = SharedObject(self.render(name, context))
        if len(self._kept) >= KEPT_RENDER_SIZE:
            del self._kept[next(iter(self._kept))]  # the oldest entry
        self._kept[key] = (values, shared)
        return shared

    def render_object(self, name: str, value: Any) -> dict[str, Any]:
        """Template ``name`` for ``value``, as ``object(name)`` renders it: from the cache when it can be."""
        reader = self._readers.get(name)
        if reader is None or not _is_frozen(type(value)):
            return self.render(name, {name: value})
        key = (name, value)
        try:
            kept = self._objects.get(key)
        except TypeError:  # a field that cannot be hashed
            return self.render(name, {name: value})
        if kept is not None and kept[0] is value:
            return kept[1]
        if kept is not None and _render_alike(reader(kept[0]), reader(value)):
            # Keep the value last given: a list names each user in every message, as one object.
            self._objects[key] = (value, kept[1])
            return kept[1]
        tree = self.render(name, {name: value})
        if not (_KEY_TYPES.issuperset(map(type, reader(value))) and _IMMUTABLE.issuperset(map(type, tree.values()))):
            return tree
        if kept is None and len(self._objects) >= OBJECT_CACHE_SIZE:
            del self._objects[next(iter(self._objects))]  # the oldest entry
        shared = SharedObject(tree)
        self._objects[key] = (value, shared)  # in place of an equal value's that renders otherwise, if any
        return shared

    def format_date(self, value: datetime) -> str:
        """A legacy date: the mapping's ``date_format``, a ``str.format`` string naming any of weekday, month
        (both English abbreviations, whatever the process locale), day, hour, minute, second and year, in UTC.
        A naive value is taken to be UTC already. Equal values format alike (equal aware ones are one
        instant; a naive one equals no aware one), so the last ``DATE_CACHE_SIZE`` are kept."""
        text = self._dates.get(value)
        if text is None:
            if len(self._dates) >= DATE_CACHE_SIZE:
                self._dates.clear()
            text = self._dates[value] = self._format_date(value)
        return text

    def _format_date(self, value: datetime) -> str:
        if value.tzinfo is not None and value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        return self.date_format.format(
            weekday=_WEEKDAYS[value.weekday()],
            month=_MONTHS[value.month - 1],
            day=value.day,
            hour=value.hour,
            minute=value.minute,
            second=value.second,
            year=value.year,
        )


def _is_frozen(kind: type) -> bool:
    """Whether values of this type cannot change: frozen dataclasses (not a subclass of one, which may add
    attributes that can)."""
    params = kind.__dict__.get("__dataclass_params__")
    return params is not None and bool(params.frozen)


def _render_alike(kept: tuple[Any, ...], given: tuple[Any, ...]) -> bool:
    """Whether equal attribute values render alike: of the same types (``1`` and ``True`` are equal, yet
    render differently) and, for datetimes, in the same time zone and fold (equal datetimes are one instant,
    perhaps in two zones)."""
    return all(
        type(a) is type(b) and (type(a) is not datetime or (a.tzinfo is b.tzinfo and a.fold == b.fold))
        for a, b in zip(kept, given, strict=True)
    )


def _reader(attributes: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    if len(attributes) == 1:
        attribute = attributes[0]
        return lambda value: (getattr(value, attribute),)
    return attrgetter(*attributes)


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
    if not values:  # null or empty
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
