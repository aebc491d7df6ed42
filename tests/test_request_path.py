"""What every request goes through, made cheaper, against the straightforward way it replaces: the metrics'
kept children, the bearer header check, request ids and the retry budget."""

from __future__ import annotations

import asyncio
import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.auth.inbound import _bearer_principal, bearer_token
from gateway.edge import new_request_id
from gateway.metrics import Metrics
from gateway.upstream.resilience import RetryPolicy, retry_budget

# --- metrics ---------------------------------------------------------------------------------------------

DIALECTS = st.sampled_from(["twitter_v1", "twitter_events", "statusnet", "v2", "unknown"])
ROUTES = st.sampled_from(["/1.1/direct_messages/destroy.json", "/2/{tail}", "unmatched"])
ENDPOINTS = st.sampled_from(["DELETE /2/dm_events/:id", "GET /2/dm_events/:id", "GET /2/users"])
OUTCOMES = st.sampled_from(["ok", "client_error", "server_error", "timeout", "too_large"])
CALLS = st.lists(
    st.one_of(
        st.tuples(st.just("request"), DIALECTS, ROUTES, st.sampled_from([200, 204, 404, 408, 503])),
        st.tuples(st.just("lookup"), st.booleans()),
        st.tuples(st.just("upstream"), ENDPOINTS, OUTCOMES, st.floats(0, 40, allow_nan=False)),
    ),
    max_size=40,
)


def samples(registry: CollectorRegistry, prefix: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        if family.name.startswith(prefix)
        for s in family.samples
        if not s.name.endswith("_created")
    }


@settings(max_examples=200, deadline=None)
@given(calls=CALLS)
def test_kept_children_count_what_labels_would(calls: list[tuple]) -> None:
    metrics = Metrics()
    reference = CollectorRegistry()
    requests = Counter("dmgw_requests", "", ("dialect", "route", "status"), registry=reference)
    lookups = Counter("dmgw_store_lookups", "", ("result",), registry=reference)
    durations = Histogram(
        "dmgw_upstream_request_duration_seconds",
        "",
        ("endpoint", "outcome"),
        buckets=metrics.upstream_duration._upper_bounds[:-1],
        registry=reference,
    )
    for kind, *args in calls:
        if kind == "request":
            dialect, route, status = args
            metrics.request_answered(dialect, route, status)
            requests.labels(dialect=dialect, route=route, status=str(status)).inc()
        elif kind == "lookup":
            (hit,) = args
            metrics.store_lookup(hit)
            lookups.labels(result="hit" if hit else "miss").inc()
        else:
            endpoint, outcome, seconds = args
            metrics.upstream_request(endpoint, outcome, seconds)
            durations.labels(endpoint=endpoint, outcome=outcome).observe(seconds)
    for prefix in ("dmgw_requests", "dmgw_store_lookups", "dmgw_upstream_request_duration"):
        assert samples(metrics.registry, prefix) == samples(reference, prefix)


# --- the bearer header -----------------------------------------------------------------------------------


def reference_bearer_token(authorization: str | None) -> str | None:
    """The header check as first written: one character at a time."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(ch.isspace() for ch in token):
        return None
    return token


WHITESPACE = st.sampled_from([" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u2003", "\u3000"])
HEADERS = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.builds(
        "{}{}{}".format,
        st.sampled_from(["Bearer ", "bearer ", "BEARER  ", " Bearer\t", "Bearer", "Basic "]),
        st.lists(st.one_of(st.text(alphabet=st.characters(codec="utf-8"), max_size=6), WHITESPACE), max_size=6).map(
            "".join
        ),
        st.one_of(st.just(""), WHITESPACE),
    ),
)


@settings(max_examples=1000, deadline=None)
@given(header=HEADERS)
def test_the_bearer_check_agrees_with_the_character_by_character_one(header: str | None) -> None:
    assert bearer_token(header) == reference_bearer_token(header)


@pytest.mark.parametrize("inside", [" ", "\t", "\x85", "\u3000"])
def test_a_token_with_whitespace_inside_is_refused(inside: str) -> None:
    assert bearer_token(f"Bearer abc{inside}def") is None
    assert bearer_token("Bearer  abcdef\t") == "abcdef"


def test_a_bearer_callers_identity_is_its_digest_however_often_it_is_asked() -> None:
    """Principals are kept for the most recent tokens; a kept one names the same digest, and only so many are
    kept."""
    for token in ("token-a", "token-b", "token-a"):
        expected = "bearer:" + hashlib.sha256(token.encode()).hexdigest()[:32]
        principal = _bearer_principal(token)
        assert (principal.source, principal.identity) == ("bearer", expected)
        assert principal is _bearer_principal(token)
    assert _bearer_principal.cache_info().maxsize == 1024


# --- request ids -----------------------------------------------------------------------------------------


def test_a_new_request_id_is_32_lowercase_hex_digits_and_never_repeats() -> None:
    ids = [new_request_id() for _ in range(2000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


# --- the retry budget ------------------------------------------------------------------------------------


async def test_a_budget_ends_with_its_block_even_when_the_block_fails() -> None:
    policy = RetryPolicy(budget=100)
    loop = asyncio.get_running_loop()
    with pytest.raises(RuntimeError), retry_budget(1.0):
        assert policy.deadline() <= loop.time() + 1.0
        raise RuntimeError("boom")
    assert policy.deadline() > loop.time() + 50  # no budget left behind: a call outside starts its own
    budget = retry_budget(2.0)
    for _ in range(2):  # the same budget object entered again starts afresh
        with budget:
            assert policy.deadline() <= loop.time() + 2.0
        assert policy.deadline() > loop.time() + 50
