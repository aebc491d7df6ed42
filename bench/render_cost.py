"""What rendering one legacy destroy body costs, in process and on one core:

    python -m bench.render_cost [--bodies N] [--users N] [--repeat N]

Renders a StatusNet XML destroy body and a v1.1 JSON destroy body through the dialect objects the app
builds, for N different messages exchanged among a few users (the benchmark's pattern: one pair of users
and thousands of messages). Each body gets user and message objects of its own, as a store read makes
them, so nothing is shared by identity between bodies. Prints microseconds per body, best of the repeats.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable

from bench import fixtures
from gateway.dialects import StatusNet, TwitterClassic
from gateway.model import Entities, Hashtag, Mention, MessageView, RateLimit, Url


def views(count: int, users: int) -> list[MessageView]:
    """``count`` messages among ``users`` users (the seed's two, then copies under other ids), each view
    holding fresh copies of its message and users."""
    seed = fixtures.seed_users()
    people = [
        dataclasses.replace(seed[i % len(seed)], id=str(1000 + i)) if i >= len(seed) else seed[i] for i in range(users)
    ]
    out = []
    for index in range(count):
        message = fixtures.direct_message(index)
        if index % 10 == 0:  # some messages carry entities
            message = dataclasses.replace(
                message,
                entities=Entities(
                    hashtags=(Hashtag("standup", 3, 11),),
                    urls=(Url("https://t.co/x", "https://example.com/", "example.com", 12, 35),),
                    mentions=(Mention("theSeanCook", fixtures.CALLER_ID, 36, 48),),
                ),
            )
        sender = people[index % users]
        recipient = people[(index + 1) % users]
        out.append(MessageView(message, dataclasses.replace(sender), dataclasses.replace(recipient)))
    return out


def per_body(render: Callable[[MessageView], object], items: list[MessageView], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for view in items:
            render(view)
        best = min(best, time.process_time() - started)
    return best / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    statusnet, twitter = StatusNet(), TwitterClassic()
    limit = RateLimit(15, 14, 1_700_000_000)
    items = views(args.bodies, args.users)
    xml = per_body(lambda view: statusnet.render_message(view, "xml", limit), items, args.repeat)
    json = per_body(lambda view: twitter.render_message(view, "json", limit), items, args.repeat)
    print(f"statusnet xml destroy: {xml:7.1f} us/body")
    print(f"v1.1 json destroy:     {json:7.1f} us/body")


if __name__ == "__main__":
    main()
