"""The access log: one JSON object per request, on a line of its own.

Fields: ``time`` (UTC, ISO 8601, when the response was done), ``method``, ``path`` (without the query
string, which may carry OAuth signatures, tokens or DM text), ``status``, ``duration_ms``, ``request_id``
(the one sent upstream and back in ``X-Request-Id``), ``dialect`` (when a legacy route or the v2
pass-through answered), ``remote`` (the peer address) and ``pid`` (the process that answered, one of several
with ``serve --workers``). Nothing else: never a header, a credential, a form
field or a body.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway.keys import DIALECT, REQUEST_ID


def access_record(request: web.BaseRequest, response: web.StreamResponse, seconds: float) -> dict[str, object]:
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
    record["pid"] = os.getpid()
    return record


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access-log hook, writing ``access_record`` as one JSON line.

    A logger with no handler of its own (aiohttp's ``aiohttp.access``, as ``serve`` uses it) gets one that
    writes the bare message to stderr and stops there, so no other format wraps the JSON.
    """

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            logger.propagate = False
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(orjson.dumps(access_record(request, response, time)).decode())

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
