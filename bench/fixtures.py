"""The data every benchmark process agrees on: who deletes, lists and sends, which ids exist, and the messages
behind them.

Ids are consecutive snowflake-sized integers from ``BASE_ID``; each run of a destroy scenario gets a range of
its own, so every destroy hits a message that exists in the emulator and has not been deleted yet. The
messages the list scenarios read (``LIST_MESSAGES`` from ``LIST_BASE_ID``, newer than anything else) live in
an emulator of their own, which never sees a destroy; the sends go there too, from another user.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the load generator imports this module too, and starts faster without the gateway
    from gateway.model import DirectMessage, User

BASE_ID = 1_700_000_000_000_000_000
SENDER_ID = "776627022"  # s0c1alm3dia in the emulator's seed
CALLER_ID = "38895958"  # theSeanCook: receives every benchmark message and deletes it
CALLER_TOKEN = "emulator-token-theSeanCook"
CONVERSATION_ID = f"{CALLER_ID}-{SENDER_ID}"
CREATED_AT = "2023-11-14T22:13:20.000Z"
# OAuth 1.0a credentials the emulator's seed knows for the caller; the gateway's store gets the same.
CONSUMER_KEY = "emulator-consumer"
CONSUMER_SECRET = "emulator-consumer-secret"
OAUTH_TOKEN = "38895958-emulatortoken"
OAUTH_TOKEN_SECRET = "emulator-token-secret-sean"
# The sends: marcosgdf to XDevelopers, so that nothing sent shows in the caller's lists.
SEND_FROM_TOKEN = "emulator-token-marcosgdf"
SEND_TO_ID = "2244994945"
# The lists: the caller's newest messages, more than one v2 page's worth of them received (v1.1 asks for 50).
LIST_BASE_ID = 1_800_000_000_000_000_000
LIST_MESSAGES = 120
LIST_CREATED_AT = "2024-05-01T12:00:00.000Z"


def message_id(index: int) -> str:
    return str(BASE_ID + index)


async def fill(store: Any, indexes: range, batch: int) -> None:
    """Put the messages ``indexes`` into ``store`` through its own ``put_messages``, ``batch`` at a time."""
    for first in range(indexes.start, indexes.stop, batch):
        await store.put_messages([direct_message(i) for i in range(first, min(first + batch, indexes.stop))])


def text_of(index: int) -> str:
    # About the length of a typical DM; varies a little so records are not all the same size.
    return f"Benchmark message number {index}: see you at the standup tomorrow, bring the numbers."


def v2_event(index: int) -> dict[str, Any]:
    return {
        "id": message_id(index),
        "event_type": "MessageCreate",
        "text": text_of(index),
        "created_at": CREATED_AT,
        "dm_conversation_id": CONVERSATION_ID,
        "sender_id": SENDER_ID,
    }


def list_event(index: int) -> dict[str, Any]:
    """One of the messages the list scenarios read: received by the caller, newer than every other one."""
    return {**v2_event(index), "id": str(LIST_BASE_ID + index), "created_at": LIST_CREATED_AT}


_CREATED = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def direct_message(index: int) -> DirectMessage:
    from gateway.model import DirectMessage

    return DirectMessage(
        id=message_id(index),
        text=text_of(index),
        created_at=_CREATED,
        sender_id=SENDER_ID,
        recipient_id=CALLER_ID,
        conversation_id=CONVERSATION_ID,
    )


def seed_users() -> list[User]:
    """The sender and the caller as the emulator's seed describes them."""
    from gateway.emulator import default_seed
    from gateway.upstream.convert import user_from_v2

    return [user_from_v2(u) for u in default_seed()["users"] if u["id"] in (SENDER_ID, CALLER_ID)]
