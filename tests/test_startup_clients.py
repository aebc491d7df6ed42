"""An unmodified legacy client starting up against ``dm-gateway serve`` over HTTPS: tweepy 3.10 asks who it
is, shows and looks up users, reads the configuration and its quotas, all signed with OAuth 1.0a.

The emulator runs on the real clock here (it checks the gateway's OAuth 1.0a timestamps); the bodies
themselves are held to their golden files in tests/test_startup_calls.py.
"""

from __future__ import annotations

from tests.test_legacy_clients import CLIENT_SETUP, SEAN_ARGS, run_client, served  # noqa: F401 - a fixture

SEAN_ID = "38895958"
MICK_ID = "776627022"
UNKNOWN_ID = "999999999"


TWEEPY_310_START = (
    CLIENT_SETUP
    + """
me = api.verify_credentials()
mick = api.get_user(screen_name="s0c1alm3dia")
looked_up = api.lookup_users(user_ids=["2244994945", "999999999"], screen_names=["marcosgdf"])
configuration = api.configuration()
limits = api.rate_limit_status(resources="direct_messages,account")
try:
    api.get_user(user_id="999999999")
    unknown = None
except tweepy.TweepError as error:
    unknown = [error.response.status_code, error.api_code]
print(json.dumps({
    "me": [me.id_str, me.screen_name, me.created_at.isoformat()],
    "mick": [mick.id, mick.name, mick.followers_count],
    "looked_up": [user.screen_name for user in looked_up],
    "dm_limit": configuration["dm_text_character_limit"],
    "limits": sorted(limits["resources"]),
    "verify_remaining": limits["resources"]["account"]["/account/verify_credentials"]["remaining"],
    "unknown": unknown,
}))
"""
)


async def test_tweepy_3_10_starts_up(served, emulator) -> None:
    result = await run_client(served, TWEEPY_310_START, "-", *SEAN_ARGS)
    assert result == {
        "me": [SEAN_ID, "theSeanCook", "2009-05-09T17:58:22"],
        "mick": [int(MICK_ID), "Mick Jagger", 0],
        "looked_up": ["XDevelopers", "marcosgdf"],
        "dm_limit": 10_000,
        "limits": ["account", "direct_messages"],
        "verify_remaining": 899,  # as v2 reported it to Sean's OAuth 1.0a token for verify_credentials
        "unknown": [404, 50],
    }
    # tweepy posts users/lookup as a signed form: the gateway verified it and asked v2 as Sean.
    calls = [(r.method, r.path) for r in emulator.state.requests]
    assert calls == [
        ("GET", "/2/users/me"),
        ("GET", "/2/users/by/username/s0c1alm3dia"),
        ("GET", "/2/users"),
        ("GET", "/2/users/by"),
        ("GET", f"/2/users/{UNKNOWN_ID}"),
    ]
    assert all(r.headers["Authorization"].startswith("OAuth ") for r in emulator.state.requests)
