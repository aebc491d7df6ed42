"""An unmodified tweepy 3.10 ``OAuthHandler`` logs a user in through ``dm-gateway serve`` over HTTPS, then
asks who it is (``verify_credentials``) and destroys a DM with the token it got: for a consumer that is a
live X app, and for one X does not know that acts through the operator's app (whose secret comes from
``DMGW_UPSTREAM_OAUTH1_CONSUMER_SECRET``).

tweepy builds its login URLs from ``OAuthHandler.OAUTH_HOST`` (``api.twitter.com`` unless told), the one
setting a client has for where it logs in. The browser's part (X's approval page) is played with requests,
as a user would click through it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.auth.credentials import Consumer
from gateway.emulator import APP_CONSUMER_KEY, APP_CONSUMER_SECRET
from gateway.store.factory import open_store
from tests.conftest import PLAIN_IDS
from tests.test_legacy_clients import Served, run_client, serving_over_tls

LIVE = Consumer(APP_CONSUMER_KEY, APP_CONSUMER_SECRET)
LEGACY = Consumer("legacy-client-key-1997", "legacy-client-secret-1997", via_upstream_app=True)
SEAN_ID = "38895958"


@pytest.fixture
async def served(emulator, tmp_path) -> AsyncIterator[Served]:
    store_url = f"sqlite:///{tmp_path}/gateway.sqlite3"
    store = await open_store(store_url)
    await store.put_consumer(LIVE)
    await store.put_consumer(LEGACY)
    await store.close()
    config = (
        f'[upstream]\nbase_url = "{emulator.url}"\noauth1_consumer_key = "{APP_CONSUMER_KEY}"\n'
        f'[store]\nurl = "{store_url}"\n'
    )
    env = {"DMGW_UPSTREAM_OAUTH1_CONSUMER_SECRET": APP_CONSUMER_SECRET}
    async with serving_over_tls(tmp_path, config, env=env, secrets=(LIVE.secret, LEGACY.secret)) as served:
        yield served


LOGIN_SCRIPT = """
import json, re, sys
from urllib.parse import parse_qsl, urlsplit
import requests, tweepy

host, consumer_key, consumer_secret, callback, message_id = sys.argv[1:6]
auth = tweepy.OAuthHandler(consumer_key, consumer_secret, callback)
auth.OAUTH_HOST = host
authorization_url = auth.get_authorization_url()

# The browser: the gateway's authorize URL leads to X's page, where the user approves.
browser = requests.Session()
page = browser.get(authorization_url)
x_token = re.search(r'name="oauth_token" value="([^"]+)"', page.text).group(1)
approve = page.url.split("?")[0]
answer = browser.post(approve, data={"oauth_token": x_token, "screen_name": "theSeanCook"}, allow_redirects=False)
hops = []
if callback == "oob":
    verifier = re.search(r'<code id="oauth_pin">([0-9]+)</code>', answer.text).group(1)
else:
    location = answer.headers["Location"]
    while not location.startswith(callback):
        hops.append(urlsplit(location).path)
        location = browser.get(location, allow_redirects=False).headers["Location"]
    verifier = dict(parse_qsl(urlsplit(location).query))["oauth_verifier"]

token, secret = auth.get_access_token(verifier)
api = tweepy.API(auth, host=host, api_root="/1.1")
me = api.verify_credentials()
api.destroy_direct_message(message_id)
print(json.dumps({
    "token": token, "secret_given": bool(secret), "status": api.last_response.status_code,
    "me": [me.id_str, me.screen_name],
    "authorization_url": authorization_url, "hops": hops, "request_token": auth.request_token["oauth_token"],
}))
"""


@pytest.mark.parametrize("consumer", [LIVE, LEGACY], ids=["live-app", "via-upstream-app"])
async def test_tweepy_logs_in_by_pin_and_destroys_a_dm(served, emulator, consumer) -> None:
    result = await run_client(served, LOGIN_SCRIPT, consumer.key, consumer.secret, "oob", PLAIN_IDS[0])
    assert result["me"] == [SEAN_ID, "theSeanCook"]  # who it is, asked as a client does right after
    assert result["status"] == 204
    assert result["authorization_url"].startswith(f"https://{served.host}/oauth/authorize?oauth_token=")
    assert emulator.state.is_deleted_for(PLAIN_IDS[0], SEAN_ID)
    x_tokens = emulator.state.oauth1.tokens
    if consumer is LIVE:
        assert result["token"] in x_tokens  # X's own token, learned by the gateway as it passed
    else:
        assert result["token"].startswith(f"{SEAN_ID}-") and result["token"] not in x_tokens
        assert not any(LEGACY.key in f"{r.path}{r.query}{r.headers}" for r in emulator.state.requests)
    delete = next(r for r in emulator.state.requests if r.method == "DELETE")
    assert f'oauth_consumer_key="{APP_CONSUMER_KEY}"' in delete.headers["Authorization"]


async def test_tweepy_callback_login_through_the_gateway_callback(served, emulator) -> None:
    callback = "https://client.example/logged-in"
    result = await run_client(served, LOGIN_SCRIPT, LEGACY.key, LEGACY.secret, callback, PLAIN_IDS[1])
    assert result["hops"] == ["/oauth/callback"]  # X -> the gateway -> the client
    assert result["me"] == [SEAN_ID, "theSeanCook"]
    assert result["status"] == 204
    assert emulator.state.is_deleted_for(PLAIN_IDS[1], SEAN_ID)
    assert not any(LEGACY.key in f"{r.path}{r.query}{r.headers}" for r in emulator.state.requests)
