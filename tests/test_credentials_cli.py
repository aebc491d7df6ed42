"""``dm-gateway credentials`` as an operator runs it: real processes against a real SQLite file."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.auth.credentials import BasicUser, Token, verify_password
from gateway.store.sqlite import SQLiteStore

CLI = [sys.executable, "-m", "gateway", "credentials"]
# Every secret handed to the CLI contains this, so output can be searched for all of them at once.
MARK = "SeCrEt"


def clean_env() -> dict[str, str]:
    """The caller's environment without gateway variables, so a developer's shell cannot change the config."""
    return {name: value for name, value in os.environ.items() if not name.startswith("DMGW_")}


def run(*args: str, stdin: str | bytes | None = None) -> subprocess.CompletedProcess[str]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    result = subprocess.run([*CLI, *args], input=data, capture_output=True, timeout=60, env=clean_env())
    out, err = result.stdout.decode(), result.stderr.decode()
    assert MARK not in out and MARK not in err, (args, out, err)
    return subprocess.CompletedProcess(result.args, result.returncode, out, err)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def read_back(path: Path, *, user: str | None = None, token: str | None = None) -> BasicUser | Token | None:
    async def read() -> BasicUser | Token | None:
        store = await SQLiteStore.open(str(path))
        try:
            return await store.get_user(user) if user is not None else await store.get_token(token or "")
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "creds.sqlite3"


@pytest.fixture
def store_flag(db: Path) -> list[str]:
    return ["--store", f"sqlite:///{db}"]


def test_register_list_and_remove(db: Path, store_flag: list[str]) -> None:
    result = run(*store_flag, "add-consumer", "emulator-consumer", f"consumer-{MARK}")
    assert result.returncode == 0, result.stderr
    assert one_line(result.stdout) == "added consumer emulator-consumer"

    result = run(*store_flag, "add-token", "emulator-consumer", "token-1", f"token-{MARK}")
    assert result.returncode == 0, result.stderr
    assert one_line(result.stdout) == "added token token-1 for consumer emulator-consumer"

    result = run(
        *store_flag, "add-user", "alice", "--password-stdin", "--upstream-bearer", f"bearer-{MARK}",
        "--upstream-refresh-token", f"refresh-{MARK}", stdin=f"pw-{MARK}\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert one_line(result.stdout) == "added user alice"

    result = run(*store_flag, "list")
    assert result.returncode == 0, result.stderr
    assert [line.split(None, 2) for line in result.stdout.splitlines()] == [
        ["consumer", "emulator-consumer", "1 token"],
        ["token", "token-1", "consumer emulator-consumer"],
        ["user", "alice", "upstream grant, refreshable"],
    ]

    result = run(*store_flag, "remove", "consumer", "emulator-consumer")
    assert result.returncode == 0, result.stderr
    assert one_line(result.stdout).startswith("removed consumer emulator-consumer")
    assert read_back(db, token="token-1") is None  # the consumer's token went with it

    result = run(*store_flag, "remove", "user", "alice")
    assert result.returncode == 0, result.stderr
    assert one_line(run(*store_flag, "list").stdout) == "no credentials"


def test_adding_again_replaces(db: Path, store_flag: list[str]) -> None:
    assert run(*store_flag, "add-consumer", "ck", f"one-{MARK}").returncode == 0
    result = run(*store_flag, "add-consumer", "ck", f"two-{MARK}")
    assert result.returncode == 0 and one_line(result.stdout) == "replaced consumer ck"
    assert run(*store_flag, "add-token", "ck", "tk", f"t-{MARK}").returncode == 0
    result = run(*store_flag, "add-token", "ck", "tk", f"t2-{MARK}")
    assert result.returncode == 0 and one_line(result.stdout) == "replaced token tk for consumer ck"
    assert read_back(db, token="tk") == Token("tk", "ck", f"t2-{MARK}")


def test_password_stdin_keeps_everything_but_the_line_ending(db: Path, store_flag: list[str]) -> None:
    password = f"  spaced ünïcødé {MARK}\t "
    result = run(
        *store_flag, "add-user", "bob", "--password-stdin", "--upstream-bearer", f"b-{MARK}",
        "--upstream-expires-in", "7200", stdin=password + "\nsecond line is ignored\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    user = read_back(db, user="bob")
    assert isinstance(user, BasicUser)
    assert verify_password(password, user.password_hash)
    assert not verify_password(password.strip(), user.password_hash)
    assert MARK not in user.password_hash
    assert user.grant.access_token == f"b-{MARK}" and user.grant.refresh_token is None
    assert user.grant.expires_at is not None and abs(user.grant.expires_at - (time.time() + 7200)) < 60
    assert "expires " in run(*store_flag, "list").stdout


def test_password_stdin_accepts_a_crlf_line_and_a_missing_final_newline(db: Path, store_flag: list[str]) -> None:
    for name, line in (("crlf", f"pw-{MARK}\r\n"), ("bare", f"pw-{MARK}")):
        result = run(*store_flag, "add-user", name, "--password-stdin", "--upstream-bearer", "b", stdin=line)
        assert result.returncode == 0, result.stderr
        user = read_back(db, user=name)
        assert isinstance(user, BasicUser) and verify_password(f"pw-{MARK}", user.password_hash), name


@pytest.mark.parametrize(
    ("stdin", "message"),
    [("\n", "empty"), ("", "empty"), (b"\xff\xfe\n", "not valid UTF-8")],
    ids=["empty-line", "no-input", "not-utf8"],
)
def test_a_bad_password_is_refused(db: Path, store_flag: list[str], stdin: str | bytes, message: str) -> None:
    result = run(*store_flag, "add-user", "carol", "--password-stdin", "--upstream-bearer", "b", stdin=stdin)
    assert result.returncode == 1
    assert message in one_line(result.stderr)
    assert result.stdout == ""
    assert read_back(db, user="carol") is None


def test_add_user_requires_password_stdin_and_a_bearer(store_flag: list[str]) -> None:
    result = run(*store_flag, "add-user", "dave", "--upstream-bearer", "b", stdin=f"{MARK}\n")
    assert result.returncode == 2 and "--password-stdin" in result.stderr
    result = run(*store_flag, "add-user", "dave", "--password-stdin", stdin=f"{MARK}\n")
    assert result.returncode == 2 and "--upstream-bearer" in result.stderr
    result = run(
        *store_flag, "add-user", "dave", "--password-stdin", "--upstream-bearer", "b",
        "--upstream-expires-in", "-5", stdin=f"{MARK}\n",
    )  # fmt: skip
    assert result.returncode == 2 and "--upstream-expires-in" in result.stderr


def test_a_token_for_an_unknown_consumer_is_refused(db: Path, store_flag: list[str]) -> None:
    result = run(*store_flag, "add-token", "ghost", "tk", f"t-{MARK}")
    assert result.returncode == 1
    assert "no consumer 'ghost'" in one_line(result.stderr)
    assert result.stdout == ""
    assert read_back(db, token="tk") is None


@pytest.mark.parametrize("kind", ["consumer", "token", "user"])
def test_removing_something_absent_is_an_error(store_flag: list[str], kind: str) -> None:
    result = run(*store_flag, "remove", kind, "absent")
    assert result.returncode == 1
    assert f"no {kind} 'absent'" in one_line(result.stderr)


def test_an_empty_key_is_refused(db: Path, store_flag: list[str]) -> None:
    result = run(*store_flag, "add-consumer", "", f"s-{MARK}")
    assert result.returncode == 1 and "KEY must not be empty" in one_line(result.stderr)
    assert one_line(run(*store_flag, "list").stdout) == "no credentials"


def test_the_config_file_names_the_store_as_for_serve(tmp_path: Path, db: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f"[store]\nurl = 'sqlite:///{db}'\n")
    result = run("--config", str(config), "add-consumer", "ck", f"s-{MARK}")
    assert result.returncode == 0, result.stderr
    assert db.is_file()
    # --config is also understood after the command, and --store overrides the file.
    assert "consumer ck" in run("list", "--config", str(config)).stdout
    other = tmp_path / "other.sqlite3"
    result = run("--config", str(config), "--store", f"sqlite:///{other}", "list")
    assert result.returncode == 0 and one_line(result.stdout) == "no credentials"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "/nonexistent/gateway.toml", "list"], "no such file"),
        (["--store", "postgres://x", "list"], "store.url must be"),
        (["--store", "memory", "list"], "would be lost"),
    ],
)
def test_configuration_errors_exit_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in one_line(result.stderr)


def test_a_store_that_cannot_be_opened_exits_1(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database" * 100)
    garbage.chmod(0o600)  # a looser mode would add its warning line
    result = run("--store", f"sqlite:///{garbage}", "list")
    assert result.returncode == 1
    assert "dm-gateway credentials:" in one_line(result.stderr)


def test_secrets_given_as_a_dash_are_read_from_stdin(db: Path, store_flag: list[str]) -> None:
    result = run(*store_flag, "add-consumer", "ck", "-", stdin=f"consumer-{MARK}\n")
    assert result.returncode == 0, result.stderr
    result = run(*store_flag, "add-token", "ck", "tk", "-", stdin=f"token-{MARK}\r\n")
    assert result.returncode == 0 and one_line(result.stdout) == "added token tk for consumer ck", result.stderr
    assert read_back(db, token="tk") == Token("tk", "ck", f"token-{MARK}")

    async def consumer_secret() -> str | None:
        store = await SQLiteStore.open(str(db))
        try:
            consumer = await store.get_consumer("ck")
            return consumer.secret if consumer else None
        finally:
            await store.close()

    assert asyncio.run(consumer_secret()) == f"consumer-{MARK}"


def test_several_dashes_read_one_line_each_in_command_line_order(db: Path, store_flag: list[str]) -> None:
    # --password-stdin takes its line in the same order as the dashes.
    result = run(
        *store_flag, "add-user", "erin", "--upstream-refresh-token", "-", "--password-stdin", "--upstream-bearer", "-",
        stdin=f"refresh-{MARK}\npw-{MARK}\nbearer-{MARK}\nnot read\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    user = read_back(db, user="erin")
    assert isinstance(user, BasicUser)
    assert (user.grant.access_token, user.grant.refresh_token) == (f"bearer-{MARK}", f"refresh-{MARK}")
    assert verify_password(f"pw-{MARK}", user.password_hash)

    result = run(
        *store_flag, "add-user", "erin", "--password-stdin", "--upstream-bearer", "-", "--upstream-refresh-token", "-",
        stdin=f"pw2-{MARK}\nbearer2-{MARK}\nrefresh2-{MARK}\n",
    )  # fmt: skip
    assert result.returncode == 0 and one_line(result.stdout) == "replaced user erin", result.stderr
    user = read_back(db, user="erin")
    assert isinstance(user, BasicUser)
    assert (user.grant.access_token, user.grant.refresh_token) == (f"bearer2-{MARK}", f"refresh2-{MARK}")
    assert verify_password(f"pw2-{MARK}", user.password_hash)


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["add-consumer", "ck", "-"], "", "SECRET on stdin is empty"),
        (["add-consumer", "ck", "-"], "\n", "SECRET on stdin is empty"),
        (["add-consumer", "ck", "-"], b"\xff\n", "SECRET on stdin is not valid UTF-8"),
        (
            ["add-user", "f", "--password-stdin", "--upstream-bearer", "-"],
            f"pw-{MARK}\n",
            "--upstream-bearer on stdin is empty",
        ),
        (
            ["add-user", "f", "--upstream-bearer", "b", "--upstream-refresh-token", "-", "--password-stdin"],
            f"r-{MARK}\n",
            "the password on stdin is empty",
        ),
    ],
    ids=["no-input", "empty-line", "not-utf8", "too-few-lines", "password-after-a-dash"],
)
def test_a_missing_or_bad_stdin_line_is_refused(
    db: Path, store_flag: list[str], args: list[str], stdin: str | bytes, message: str
) -> None:
    result = run(*store_flag, *args, stdin=stdin)
    assert result.returncode == 1
    assert message in one_line(result.stderr)
    assert result.stdout == ""
    assert one_line(run(*store_flag, "list").stdout) == "no credentials"


def test_help_says_how_to_read_secrets_from_stdin() -> None:
    for action in ("add-consumer", "add-token", "add-user"):
        result = run(action, "--help")
        assert result.returncode == 0
        text = " ".join(result.stdout.split())
        assert "Any secret given as - is read from stdin instead, one line each, in the order the arguments" in text
