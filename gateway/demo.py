"""``dm-gateway demo``: the emulator and the gateway in one process, every legacy destroy form shown.

The gateway runs exactly as ``serve`` builds it, on the embedded default store (SQLite, in a temporary
directory), with the emulator standing in for X API v2. Each call prints the request and the response as
it is on the wire. The exit status is non-zero if any answer differs from what a legacy client expects.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from gateway.app import create_app
from gateway.config import load_config
from gateway.emulator import EmulatorServer

SIDECAR_TOKEN = "emulator-token-theSeanCook"  # the gateway acts for theSeanCook unless a client says otherwise
MARCOS_TOKEN = "emulator-token-marcosgdf"


@dataclass(frozen=True)
class DemoCall:
    title: str
    method: str
    path: str
    expect: int
    form: dict[str, str] | None = None
    bearer: str | None = None


CALLS = (
    DemoCall(
        "Twitter v1.1 classic, id in the query string (the v1.1 docs example)",
        "POST", "/1.1/direct_messages/destroy.json?id=240251665733795841", 200,
    ),
    DemoCall(
        "Twitter v1.1 classic, id in the form body, include_entities=false",
        "POST", "/1.1/direct_messages/destroy.json", 200, form={"id": "1583890000000000004", "include_entities": "false"},
    ),
    DemoCall(
        "Twitter v1.1 events: 204, no body",
        "DELETE", "/1.1/direct_messages/events/destroy.json?id=1583890000000000003", 204,
    ),
    DemoCall(
        "StatusNet XML, id in the path, the client's own v2 bearer token passed through",
        "POST", "/api/direct_messages/destroy/39.xml", 200, bearer=MARCOS_TOKEN,
    ),
    DemoCall(
        "StatusNet JSON, id in the path",
        "DELETE", "/api/direct_messages/destroy/38.json", 200, bearer=MARCOS_TOKEN,
    ),
    DemoCall(
        "Twitter v1 XML, destroy.xml?id=, text that needs escaping",
        "POST", "/1/direct_messages/destroy.xml?id=1583890000000000002", 200,
    ),
    DemoCall(
        "Twitter v1.1 classic, a message already deleted: the legacy error",
        "POST", "/1.1/direct_messages/destroy.json?id=240251665733795841", 404,
    ),
    DemoCall(
        "StatusNet XML, a malformed id: refused before it reaches X API v2",
        "POST", "/api/direct_messages/destroy/12ab.xml", 400,
    ),
)  # fmt: skip


async def run_demo(*, port: int = 0, keep_running: bool = False) -> int:
    # The emulator's access log would bury the calls this command is here to show.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="dm-gateway-demo-") as workdir:
        async with EmulatorServer() as emulator:
            config = load_config(
                env={},
                overrides={
                    "server": {"port": port},
                    "upstream": {"base_url": emulator.url, "bearer_token": SIDECAR_TOKEN},
                    "store": {"url": f"sqlite:///{workdir}/demo.sqlite3"},
                    "auth": {"sidecar": True},
                },
            )
            runner = web.AppRunner(create_app(config), access_log=None)
            await runner.setup()
            try:
                await web.TCPSite(runner, config.server.host, config.server.port).start()
                base = f"http://{config.server.host}:{runner.addresses[0][1]}"
                print(f"X API v2 emulator on {emulator.url}; gateway on {base} (SQLite store in {workdir})\n")
                failures = await _run_calls(base)
                print(f"{len(CALLS) - failures} of {len(CALLS)} calls answered as a legacy client expects.")
                if keep_running:
                    await _serve_until_interrupted(base)
            finally:
                await runner.cleanup()
    return 1 if failures else 0


async def _run_calls(base: str) -> int:
    failures = 0
    async with aiohttp.ClientSession() as session:
        for call in CALLS:
            headers = {"Authorization": f"Bearer {call.bearer}"} if call.bearer else {}
            print(f"== {call.title}")
            shown_body = "" if call.form is None else "  " + "&".join(f"{k}={v}" for k, v in call.form.items())
            print(f"> {call.method} {call.path}{shown_body}")
            async with session.request(call.method, base + call.path, data=call.form, headers=headers) as resp:
                body = await resp.read()
                content_type = resp.headers.get("Content-Type", "")
                print(f"< {resp.status} {resp.reason}  {content_type}".rstrip())
                if body:
                    print(body.decode("utf-8"))
                if resp.status != call.expect:
                    failures += 1
                    print(f"!! expected {call.expect}")
            print()
    return failures


async def _serve_until_interrupted(base: str) -> None:
    print(f"\nStill serving on {base}. Try:")
    print(f"  curl -X POST '{base}/1.1/direct_messages/destroy.json?id=1583890000000000001'")
    print("Press Ctrl-C to stop.")
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        pass
