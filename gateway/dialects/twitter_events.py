"""Twitter REST API v1.1, direct message events: ``new`` (a JSON ``message_create`` event), ``list``
(cursor-paged), ``show`` and ``destroy`` (204, no body). Messages are ``message_create`` events with a
millisecond ``created_timestamp``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.dialects.base import JSON_TYPE, Dialect, LegacyRequest, LegacyResponse, RouteSpec
from gateway.errors import InvalidMedia, InvalidParameter, MissingParameter
from gateway.ids import is_id
from gateway.model import DestroyDM, ListEvents, Operation, Outcome, ShowDM
from gateway.render.serialize import to_json

#: v2 pagination tokens are short; anything much longer is not one and never reaches v2.
_MAX_CURSOR = 256
_RECIPIENT = "event.message_create.target.recipient_id"
_DATA = "event.message_create.message_data"


class TwitterEvents(Dialect):
    name = "twitter_events"
    mapping_name = "twitter_events"
    routes = (
        RouteSpec(("POST",), "/direct_messages/events/new.json", "new", "json", body="json"),
        RouteSpec(("GET",), "/direct_messages/events/list.json", "list", "json"),
        RouteSpec(("GET",), "/direct_messages/events/show.json", "show", "json"),
        RouteSpec(("DELETE",), "/direct_messages/events/destroy.json", "destroy", "json"),
    )
    operations = frozenset(("new", "list", "show", "destroy"))

    def parse(self, operation: str, request: LegacyRequest) -> Operation:
        if operation == "new":
            return self._send(request)
        if operation == "list":
            cursor = request.first("cursor") or None
            if cursor is not None and (len(cursor) > _MAX_CURSOR or not cursor.isascii() or not cursor.isprintable()):
                raise InvalidParameter("cursor")
            return ListEvents(count=request.number("count", 20, 50), cursor=cursor)
        if operation == "show":
            return ShowDM(id=self.message_id(request), users_shown=False)
        if operation == "destroy":
            # No body is answered, so the gateway need not look the message up before deleting it.
            return DestroyDM(id=self.message_id(request), want_body=False)
        raise self.unknown(operation)

    def _send(self, request: LegacyRequest) -> Operation:
        """``{"event": {"type": "message_create", "message_create": {"target": {"recipient_id": ...},
        "message_data": {"text": ...}}}}``; each missing or malformed member is named in the error."""
        event = _member(request.json, "event")
        kind = _member(event, "event.type", str)
        if kind != "message_create":
            raise InvalidParameter("event.type")
        create = _member(event, "event.message_create")
        target = _member(create, "event.message_create.target")
        recipient = _member(target, _RECIPIENT, str)
        if not is_id(recipient):
            raise InvalidParameter(_RECIPIENT)
        data = _member(create, "event.message_create.message_data")
        text = data.get("text")
        if text is not None and not isinstance(text, str):
            raise InvalidParameter("event.message_create.message_data.text")
        # What v2 cannot carry (a location, quick replies, buttons) is refused: never sent without it.
        for key in data:
            if key not in ("text", "attachment"):
                raise InvalidParameter(f"{_DATA}.{key}"[:200])
        op = self.send_op(request, text, user_id=recipient)
        if data.get("attachment") is not None:
            op = replace(op, media_id=_media_id(data["attachment"]))
        return op

    def attach(self, tree: dict[str, Any], media: dict[str, Any]) -> dict[str, Any]:
        """An event's tree with ``message_create.message_data.attachment``: ``{"type": "media", "media": ...}``."""
        create = dict(tree["message_create"])
        create["message_data"] = {**create["message_data"], "attachment": {"type": "media", "media": media}}
        tree["message_create"] = create
        return tree

    def render(self, op: Operation, outcome: Outcome, fmt: str) -> LegacyResponse:
        headers = self.rate_limit_headers(outcome.rate_limit)
        if isinstance(op, DestroyDM):
            return LegacyResponse(204, headers=headers)
        if isinstance(op, ListEvents):
            tree: dict[str, Any] = {}
            if outcome.next_cursor:
                tree["next_cursor"] = outcome.next_cursor
            tree["events"] = [self.message_tree(view, "event", kept=True) for view in outcome.views]
        else:
            assert outcome.view is not None
            tree = {"event": self.message_tree(outcome.view, "event")}
        return LegacyResponse(200, to_json(tree), JSON_TYPE, headers)


def _media_id(attachment: Any) -> str:
    """The media id of ``{"type": "media", "media": {"id": ...}}``: the one attachment v2 allows. A list
    (more than one), another type or a malformed id is refused."""
    if not isinstance(attachment, dict):
        raise InvalidMedia("an attachment that is not one object")
    if attachment.get("type") != "media":
        raise InvalidParameter(f"{_DATA}.attachment.type")
    if set(attachment) - {"type", "media"}:
        raise InvalidMedia("an attachment with more than media")
    media = attachment.get("media")
    media_id = media.get("id") if isinstance(media, dict) else None
    if isinstance(media_id, int) and not isinstance(media_id, bool):
        media_id = str(media_id)
    if not isinstance(media_id, str) or not is_id(media_id):
        raise InvalidMedia("an attachment without a media id")
    return media_id


def _member(parent: Any, path: str, kind: type = dict) -> Any:
    """``parent``'s member named by the last part of ``path``, which must be a ``kind``."""
    if not isinstance(parent, dict):
        raise MissingParameter(path)
    value = parent.get(path.rsplit(".", 1)[-1])
    if value is None:
        raise MissingParameter(path)
    if not isinstance(value, kind):
        raise InvalidParameter(path)
    return value
