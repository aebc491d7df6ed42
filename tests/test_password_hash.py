"""Password hashes as stored for Basic users: scrypt, self-describing, and never a crash on a bad row."""

from __future__ import annotations

import base64
import hashlib
import time

import pytest

from gateway.auth.credentials import MAX_SCRYPT_WORK, hash_password, verify_password


def encode(password: str, *, n: int, r: int, p: int, salt: bytes = b"0123456789abcdef", length: int = 32) -> str:
    """A genuine hash with chosen parameters, built independently of hash_password."""
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=length, maxmem=maxmem)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(key).decode()}"


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password("correct horse ünïcødé 😀")


def test_the_right_password_verifies(stored: str) -> None:
    assert verify_password("correct horse ünïcødé 😀", stored) is True


@pytest.mark.parametrize(
    "attempt",
    ["wrong", "", "correct horse ünïcødé 😀 ", "Correct horse ünïcødé 😀", "correct horse unicode 😀"],
)
def test_a_wrong_password_does_not(stored: str, attempt: str) -> None:
    assert verify_password(attempt, stored) is False


def test_the_encoding_names_its_parameters(stored: str) -> None:
    prefix, n, r, p, salt, key = stored.split("$")
    assert (prefix, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(key)) == 32
    assert "correct" not in stored


def test_each_hash_has_a_fresh_salt() -> None:
    first, second = hash_password("same"), hash_password("same")
    assert first != second
    assert first.split("$")[4] != second.split("$")[4]
    assert verify_password("same", first) and verify_password("same", second)


def test_an_empty_password_is_never_hashed() -> None:
    with pytest.raises(ValueError):
        hash_password("")


def test_parameters_are_read_from_the_encoded_value() -> None:
    cheaper = encode("pw", n=2**10, r=4, p=2)
    assert verify_password("pw", cheaper) is True
    assert verify_password("px", cheaper) is False


def test_a_hash_costlier_than_the_bound_is_refused_even_when_it_matches() -> None:
    n, r, p = 2**10, 1, 1024  # a genuine hash, eight times the default work (a few tenths of a second)
    assert n * r * p > MAX_SCRYPT_WORK
    assert verify_password("pw", encode("pw", n=n, r=r, p=p)) is False


@pytest.mark.parametrize("n", [2**20, 2**31, 2**62, 10**10 - 1])
def test_a_tampered_n_fails_fast(stored: str, n: int) -> None:
    parts = stored.split("$")
    parts[1] = str(n)
    started = time.perf_counter()
    assert verify_password("correct horse ünïcødé 😀", "$".join(parts)) is False
    assert time.perf_counter() - started < 0.5


def _with(stored: str, index: int, value: str) -> str:
    parts = stored.split("$")
    parts[index] = value
    return "$".join(parts)


@pytest.mark.parametrize(
    "make",
    [
        lambda s: "",
        lambda s: "scrypt",
        lambda s: "not a hash at all",
        lambda s: s.replace("scrypt$", "bcrypt$", 1),
        lambda s: s + "$extra",
        lambda s: s.rsplit("$", 1)[0],
        lambda s: _with(s, 1, "16383"),  # not a power of two
        lambda s: _with(s, 1, "1"),
        lambda s: _with(s, 1, "0"),
        lambda s: _with(s, 1, "-16384"),
        lambda s: _with(s, 1, "+16384"),
        lambda s: _with(s, 1, " 16384"),
        lambda s: _with(s, 1, "16_384"),
        lambda s: _with(s, 1, "１６３８４"),  # fullwidth digits, which int() would accept
        lambda s: _with(s, 2, "0"),
        lambda s: _with(s, 3, "x"),
        lambda s: _with(s, 4, ""),
        lambda s: _with(s, 4, "not*base64"),
        lambda s: _with(s, 5, "AAAA"),  # a 3-byte key
        lambda s: _with(s, 5, s.split("$")[5][:-4] + "AAA="),  # same length, other bytes
    ],
)
def test_a_malformed_or_altered_value_is_just_false(stored: str, make: object) -> None:
    encoded = make(stored)  # type: ignore[operator]
    assert encoded != stored
    assert verify_password("correct horse ünïcødé 😀", encoded) is False


def test_a_password_that_cannot_be_encoded_is_false_not_an_error(stored: str) -> None:
    assert verify_password("\udc80", stored) is False
