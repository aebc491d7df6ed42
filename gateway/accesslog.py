"""The access log: one JSON object per request, on a line of its own.

Fields: ``time`` (UTC, ISO 8601, when the response was done), ``method``, ``path`` (without the query
string, which may carry OAuth signatures, tokens or DM text), ``status``, ``duration_ms``, ``request_id``
(the one sent upstream and back in ``X-Request-Id``), ``dialect`` (when a legacy route or the v2
pass-through answered), ``remote`` (the peer address) and ``pid`` (the process that answered, one of several
with ``serve --workers``). Nothing else: never a header, a credential, a form
field or a body.

``serve`` writes the lines to stderr through a handler of the access log's own (``BareLines``): each line
skips the logging record a message would become, and the lines of one loop turn go out in one write at the
start of the next turn (before anything else that handler writes, and at exit; the other log lines have a
handler of their own, so an access line may follow one logged just after its request was answered). A
logger given handlers of its own gets every line as an INFO record instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from datetime import UTC, datetime

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway.keys import DIALECT, REQUEST_ID


def access_record(
    request: web.BaseRequest, response: web.StreamResponse, seconds: float, pid: int
) -> dict[str, object]:
    """The access-log entry of a request answered by the process ``pid``."""
    record: dict[str, object] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "method": request.method,
        "path": request.path,
        "status": response.status,
        "duration_ms": round(seconds * 1000, 3),
        "request_id": response.headers.get("X-Request-Id") or request.get(REQUEST_ID),
    }
    dialect = request.get(DIALECT)
    if dialect is not None:
        record["dialect"] = dialect.name
    elif request.path.startswith("/2/"):
        record["dialect"] = "v2"
    record["remote"] = request.remote
    record["pid"] = pid
    return record


class BareLines(logging.StreamHandler):
    """Writes each record's bare message to stderr; lines handed to ``add`` wait for the end of the loop
    turn that made them, and go out together."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))
        self._pending: list[str] = []

    def add(self, line: str) -> None:
        """Write ``line`` (without its line end) at the start of the next loop turn, with the others added
        meanwhile; at once outside a running loop."""
        self._pending.append(line)
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        """Write the lines waiting, then flush the stream (logging flushes every handler at exit)."""
        with self.lock:  # type: ignore[union-attr]
            if self._pending:
                lines, self._pending = self._pending, []
                self.stream.write("\n".join(lines) + self.terminator)
        super().flush()

    def emit(self, record: logging.LogRecord) -> None:
        if self._pending:  # in the order they were made
            self.flush()
        super().emit(record)


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access-log hook, writing ``access_record`` as one JSON line.

    A logger with no handler of its own (aiohttp's ``aiohttp.access``, as ``serve`` uses it) gets a
    ``BareLines`` handler and stops there, so no other format wraps the JSON; the lines are then handed to
    that handler as they are. aiohttp makes one per connection.
    """

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        if not logger.handlers:
            logger.addHandler(BareLines())
            logger.propagate = False
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.INFO)
        handlers = logger.handlers
        only = handlers[0] if len(handlers) == 1 else None
        self._lines = only if isinstance(only, BareLines) and only.level == logging.NOTSET else None
        self._pid = os.getpid()

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        line = orjson.dumps(access_record(request, response, time, self._pid)).decode()
        if self._lines is not None and not self.logger.propagate:
            self._lines.add(line)
        else:
            self.logger.info(line)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
