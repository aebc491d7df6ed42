"""Query-string validation with v2's habit of reporting every bad parameter in one 400.

A handler makes a ``QueryCheck``, asks it for each parameter it understands, and calls ``done()``
before touching any data; the check has gathered an ``errors`` entry for everything wrong on the way.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from multidict import MultiMapping

from gateway.emulator.pagination import Cursor, decode_token
from gateway.emulator.problems import invalid_request, parameter_error

_ID = re.compile("[0-9]{1,19}", re.ASCII)
USERNAME = re.compile("[A-Za-z0-9_]{1,15}", re.ASCII)


class QueryCheck:
    """Parses one request's query string, collecting problems instead of failing at the first."""

    def __init__(self, query: MultiMapping[str], known: Collection[str]) -> None:
        self._query = query
        self._errors: list[dict[str, object]] = []
        for name in query:
            if name not in known:
                self._errors.append(
                    parameter_error(
                        name,
                        query.getall(name),
                        f"The query parameter [{name}] is not one of [{','.join(sorted(known))}]",
                    )
                )

    def done(self) -> None:
        """Raise the 400 describing everything found wrong, if anything was."""
        if self._errors:
            raise invalid_request(self._errors)

    def choices(self, name: str, allowed: Collection[str], default: Sequence[str]) -> tuple[str, ...]:
        """A comma-separated list whose every item must be one of ``allowed``; ``default`` if absent."""
        raw = self._query.get(name)
        if raw is None:
            return tuple(default)
        values = tuple(dict.fromkeys(raw.split(",")))
        listing = ",".join(sorted(allowed))
        for value in values:
            if value not in allowed:
                self._fail(name, value, f"The `{name}` query parameter value [{value}] is not one of [{listing}]")
        return values

    def integer(self, name: str, low: int, high: int, default: int) -> int:
        raw = self._query.get(name)
        if raw is None:
            return default
        if raw.isascii() and raw.isdigit() and low <= int(raw) <= high:
            return int(raw)
        self._fail(name, raw, f"The `{name}` query parameter value [{raw}] is not between {low} and {high}")
        return default

    def cursor(self, name: str) -> Cursor | None:
        """A pagination token this emulator handed out earlier, decoded."""
        raw = self._query.get(name)
        if raw is None:
            return None
        try:
            return decode_token(raw)
        except ValueError:
            self._fail(name, raw, f"The `{name}` query parameter value [{raw}] is not a valid pagination token")
            return None

    def ids(self, name: str, most: int) -> tuple[str, ...]:
        """A required comma-separated list of 1 to ``most`` numeric ids, duplicates dropped."""
        return self._list(name, most, _ID)

    def usernames(self, name: str, most: int) -> tuple[str, ...]:
        """A required comma-separated list of 1 to ``most`` usernames, duplicates dropped."""
        return self._list(name, most, USERNAME)

    def _list(self, name: str, most: int, pattern: re.Pattern[str]) -> tuple[str, ...]:
        raw = self._query.get(name, "")
        if not raw:
            self._fail(name, raw, f"The `{name}` query parameter can not be empty")
            return ()
        values = tuple(dict.fromkeys(raw.split(",")))
        if len(values) > most:
            self._fail(
                name,
                raw,
                f"The number of values in the `{name}` query parameter list [{len(values)}] "
                f"is not between 1 and {most}",
            )
        for value in values:
            self._match(name, value, pattern)
        return values

    def identifier(self, name: str, value: str) -> str:
        """An id from the path or the query: 1 to 19 ASCII digits."""
        return self._match(name, value, _ID)

    def _match(self, name: str, value: str, pattern: re.Pattern[str]) -> str:
        if not pattern.fullmatch(value):
            message = f"The `{name}` query parameter value [{value}] does not match ^{pattern.pattern}$"
            self._fail(name, value, message)
        return value

    def _fail(self, name: str, value: str, message: str) -> None:
        self._errors.append(parameter_error(name, [value], message))
