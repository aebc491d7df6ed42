"""The X API v2 endpoints the gateway calls: DM events (read, list, delete, send) and user lookups.

The middleware has already authenticated the caller and counted the request against its quota, so a
handler only validates its query, looks the data up and shapes the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.emulator.auth import CALLER_KEY, Caller
from gateway.emulator.pagination import paginate
from gateway.emulator.params import USERNAME, QueryCheck
from gateway.emulator.problems import dm_event_not_found, forbidden, plain, resource_not_found
from gateway.emulator.state import STATE_KEY, EmulatorState, Event, newest_first
from gateway.emulator.views import (
    EVENT_FIELDS,
    EXPANSIONS,
    MEDIA_FIELDS,
    USER_FIELDS,
    document,
    event_view,
    expanded_media,
    expanded_users,
    user_view,
)
from gateway.emulator.wire import json_response, read_json

EVENT_TYPES = ("MessageCreate", "ParticipantsJoin", "ParticipantsLeave")
MAX_RESULTS = 100
MAX_USER_IDS = 100
MAX_DM_TEXT = 10_000

_SHAPE_PARAMS = ("dm_event.fields", "expansions", "user.fields", "media.fields")
_LIST_PARAMS = (*_SHAPE_PARAMS, "event_types", "max_results", "pagination_token")


def add_v2_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/2/dm_events", list_events, allow_head=False)
    router.add_get("/2/dm_events/{id}", get_event, allow_head=False)
    router.add_delete("/2/dm_events/{id}", delete_event)
    router.add_get("/2/users", lookup_users, allow_head=False)
    router.add_get("/2/users/me", me, allow_head=False)
    router.add_get("/2/users/by", users_by_usernames, allow_head=False)
    router.add_get("/2/users/by/username/{username}", user_by_username, allow_head=False)
    router.add_get("/2/users/{id}", user_by_id, allow_head=False)
    router.add_post("/2/dm_conversations/with/{participant_id}/messages", send_to_participant)


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a DM-event request asked to see: event fields, expansions and fields of expanded users and
    media."""

    event_fields: tuple[str, ...]
    expansions: tuple[str, ...]
    user_fields: tuple[str, ...]
    media_fields: tuple[str, ...]

    @classmethod
    def read(cls, check: QueryCheck) -> _Shape:
        return cls(
            event_fields=check.choices("dm_event.fields", EVENT_FIELDS, ()),
            expansions=check.choices("expansions", EXPANSIONS, ()),
            user_fields=check.choices("user.fields", USER_FIELDS, ()),
            media_fields=check.choices("media.fields", MEDIA_FIELDS, ()),
        )

    def render(self, events: list[Event], state: EmulatorState) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The events as requested, and the rest of the document: the users and media expanded from them,
        and errors for users gone missing."""
        users, errors = expanded_users(events, self.expansions, state.users, self.user_fields)
        media = expanded_media(events, self.expansions, state.media, self.media_fields)
        return [event_view(event, self.event_fields) for event in events], {
            "users": users,
            "errors": errors,
            "media": media,
        }


async def get_event(request: web.Request) -> web.Response:
    state, caller = _context(request)
    check = QueryCheck(request.query, _SHAPE_PARAMS)
    event_id = check.identifier("id", request.match_info["id"])
    shape = _Shape.read(check)
    check.done()
    [data], rest = shape.render([_event_for(state, caller, event_id)], state)
    return json_response(document(data, **rest))


async def delete_event(request: web.Request) -> web.Response:
    state, caller = _context(request)
    check = QueryCheck(request.query, ())
    event_id = check.identifier("id", request.match_info["id"])
    check.done()
    _event_for(state, caller, event_id)
    state.delete_for(event_id, caller.user_id)
    return json_response({"data": {"deleted": True}})


async def send_to_participant(request: web.Request) -> web.Response:
    """A one-to-one message: the event gets the next id, the conversation is ``{smaller}-{larger}``."""
    state, caller = _context(request)
    participant = request.match_info["participant_id"]
    try:
        body = await read_json(request)
    except ValueError:
        raise plain(400, "The request body must be JSON.") from None
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise plain(400, "A message needs text.")
    if len(text) > MAX_DM_TEXT:
        raise plain(400, f"A message may have at most {MAX_DM_TEXT} characters.")
    if participant not in state.users or participant == caller.user_id:
        raise plain(400, f"Cannot send a message to {participant}.")
    if state.users[participant].get("receives_your_dm") is False:
        raise plain(403, "You are not permitted to send a message to this user.")
    media_keys = _attachments(state, caller, body.get("attachments"))
    event_id = str(max((int(i) for i in state.events), default=1_600_000_000_000_000_000) + 1)
    conversation = "-".join(sorted((caller.user_id, participant), key=int))
    created = datetime.fromtimestamp(state.now(), UTC).isoformat(timespec="milliseconds")
    state.events[event_id] = {
        "id": event_id,
        "event_type": "MessageCreate",
        "text": text,
        "created_at": created.replace("+00:00", "Z"),
        "dm_conversation_id": conversation,
        "sender_id": caller.user_id,
    }
    if media_keys:
        state.events[event_id]["attachments"] = {"media_keys": media_keys}
    return json_response({"data": {"dm_conversation_id": conversation, "dm_event_id": event_id}}, status=201)


async def list_events(request: web.Request) -> web.Response:
    state, caller = _context(request)
    check = QueryCheck(request.query, _LIST_PARAMS)
    shape = _Shape.read(check)
    event_types = check.choices("event_types", EVENT_TYPES, EVENT_TYPES)
    size = check.integer("max_results", 1, MAX_RESULTS, MAX_RESULTS)
    cursor = check.cursor("pagination_token")
    check.done()
    events = [event for event in state.visible_events(caller.user_id) if event["event_type"] in event_types]
    page = paginate(events, newest_first, size, cursor)
    data, rest = shape.render(list(page.items), state)
    meta: dict[str, Any] = {"result_count": len(data)}
    if page.next_token:
        meta["next_token"] = page.next_token
    if page.previous_token:
        meta["previous_token"] = page.previous_token
    return json_response(document(data, meta=meta, **rest))


async def lookup_users(request: web.Request) -> web.Response:
    state, _ = _context(request)
    check = QueryCheck(request.query, ("ids", "user.fields"))
    user_ids = check.ids("ids", MAX_USER_IDS)
    fields = check.choices("user.fields", USER_FIELDS, ())
    check.done()
    data = [user_view(state.users[user_id], fields) for user_id in user_ids if user_id in state.users]
    errors = [resource_not_found("user", "ids", user_id, "user") for user_id in user_ids if user_id not in state.users]
    return json_response(document(data, errors=errors))


async def users_by_usernames(request: web.Request) -> web.Response:
    """Up to 100 users by username, in the order asked; names that match no one come back as errors."""
    state, _ = _context(request)
    check = QueryCheck(request.query, ("usernames", "user.fields"))
    usernames = check.usernames("usernames", MAX_USER_IDS)
    fields = check.choices("user.fields", USER_FIELDS, ())
    check.done()
    found = {name: state.user_named(name) for name in usernames}
    data = [user_view(user, fields) for user in found.values() if user is not None]
    errors = [resource_not_found("user", "usernames", name, "user") for name, user in found.items() if user is None]
    return json_response(document(data, errors=errors))


async def user_by_id(request: web.Request) -> web.Response:
    state, _ = _context(request)
    check = QueryCheck(request.query, ("user.fields",))
    user_id = check.identifier("id", request.match_info["id"])
    fields = check.choices("user.fields", USER_FIELDS, ())
    check.done()
    user = state.users.get(user_id)
    if user is None:
        return json_response(document(None, errors=[resource_not_found("user", "id", user_id, "user")]))
    return json_response({"data": user_view(user, fields)})


async def user_by_username(request: web.Request) -> web.Response:
    """Usernames match without regard to case, as on X."""
    state, _ = _context(request)
    check = QueryCheck(request.query, ("user.fields",))
    fields = check.choices("user.fields", USER_FIELDS, ())
    check.done()
    username = request.match_info["username"]
    if not USERNAME.fullmatch(username):
        message = f"The `username` query parameter value [{username}] does not match ^{USERNAME.pattern}$"
        raise plain(400, message)
    user = state.user_named(username)
    if user is None:
        return json_response(document(None, errors=[resource_not_found("user", "username", username, "user")]))
    return json_response({"data": user_view(user, fields)})


async def me(request: web.Request) -> web.Response:
    state, caller = _context(request)
    check = QueryCheck(request.query, ("user.fields",))
    fields = check.choices("user.fields", USER_FIELDS, ())
    check.done()
    return json_response({"data": user_view(state.users[caller.user_id], fields)})


def _attachments(state: EmulatorState, caller: Caller, value: Any) -> list[str]:
    """The media keys of a send's ``attachments``: at most one ``{"media_id": ...}``, of media the caller
    uploaded (v2 refuses anything else with 400, and sends nothing)."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 1:
        raise plain(400, "A message may have at most one attachment.")
    keys = []
    for item in value:
        media_id = item.get("media_id") if isinstance(item, dict) else None
        media = state.media.get(media_id) if isinstance(media_id, str) else None
        if media is None or media["owner_id"] != caller.user_id:
            raise plain(400, f"The media id {str(media_id)[:40]} is not valid.")
        keys.append(media["media_key"])
    return keys


def _context(request: web.Request) -> tuple[EmulatorState, Caller]:
    return request.app[STATE_KEY], request[CALLER_KEY]


def _event_for(state: EmulatorState, caller: Caller, event_id: str) -> Event:
    """The event if this caller may see it: 404 when unknown or deleted for them, 403 when not theirs."""
    event = state.events.get(event_id)
    if event is None or state.is_deleted_for(event_id, caller.user_id):
        raise dm_event_not_found(event_id)
    if not state.is_participant(event, caller.user_id):
        raise forbidden()
    return event
