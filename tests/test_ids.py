"""parse_id: exactly one positive 64-bit id, in ASCII digits, without a leading zero."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.errors import InvalidId, MissingId
from gateway.ids import MAX_ID, parse_id

LARGEST = str(2**63 - 1)  # 9223372036854775807


def test_max_id_is_the_largest_signed_64_bit_value() -> None:
    assert MAX_ID == 9223372036854775807


@pytest.mark.parametrize(
    "value",
    ["1", "9", "10", "240251665733795841", "1583890000000000001", "1" * 19, LARGEST, str(2**63 - 2)],
)
def test_valid_ids(value: str) -> None:
    assert parse_id([value]) == value


def test_the_result_is_the_given_string_not_a_number() -> None:
    result = parse_id(["240251665733795841"])
    assert isinstance(result, str)


@pytest.mark.parametrize(
    "value",
    [
        str(2**63),  # one past the boundary
        str(2**63 + 1),
        "9" * 19,
        str(2**64),
        "1" * 20,  # twenty digits
        "12345678901234567890",
        "0",
        "00",
        "01",
        "0240251665733795841",
        "-1",
        "-0",
        "+1",
        " 1",
        "1 ",
        "1\n",
        "\t1",
        "1\x00",
        "١٢٣",  # Arabic-Indic digits
        "１２３",  # fullwidth digits
        "1２3",
        "¹",  # superscript one: str.isdigit() says yes
        "1e5",
        "1E5",
        "0x10",
        "1_000",
        "1.0",
        "1,000",
        "..",
        "../1",
        "1/..",
        "%2F",
        "1%2F2",
        "%31",
        "abc",
        "None",
        "1;2",
        "1,2",
    ],
)
def test_invalid_ids(value: str) -> None:
    with pytest.raises(InvalidId):
        parse_id([value])


@pytest.mark.parametrize("values", [[], [""], ["", ""]])
def test_missing_id(values: list[str]) -> None:
    with pytest.raises(MissingId):
        parse_id(values)


def test_missing_and_invalid_are_different_kinds() -> None:
    assert MissingId.kind == "missing_id"
    assert InvalidId.kind == "invalid_id"
    assert not issubclass(MissingId, InvalidId) and not issubclass(InvalidId, MissingId)


@pytest.mark.parametrize("values", [["1", "2"], ["12", "012"], ["5", "5", "6"], ["123", "１２３"]])
def test_two_different_ids(values: list[str]) -> None:
    with pytest.raises(InvalidId):
        parse_id(values)


@pytest.mark.parametrize("values", [["42", "42"], ["42", "42", "42"], [LARGEST, LARGEST]])
def test_the_same_id_twice_is_fine(values: list[str]) -> None:
    assert parse_id(values) == values[0]


def test_a_duplicated_bad_id_is_still_bad() -> None:
    with pytest.raises(InvalidId):
        parse_id(["01", "01"])


def test_error_detail_does_not_echo_the_value() -> None:
    # The detail goes to logs; a hostile id must not be copied into it verbatim.
    with pytest.raises(InvalidId) as info:
        parse_id(["<script>alert(1)</script>"])
    assert "<script>" not in str(info.value)


def _expected_valid(text: str) -> bool:
    """The specification, written independently of the implementation's regular expression."""
    if not text or not all("0" <= ch <= "9" for ch in text) or text[0] == "0":
        return False
    return 1 <= int(text) <= 2**63 - 1


ids_and_noise = st.one_of(
    st.text(),
    st.integers(min_value=-(2**65), max_value=2**65).map(str),
    st.integers(min_value=2**63 - 1000, max_value=2**63 + 1000).map(str),
    st.from_regex(r"\A[0-9]{1,21}\Z"),
    st.text(alphabet=st.characters(categories=["Nd"]), min_size=1, max_size=20),
)


@given(ids_and_noise)
@example("")
@example(LARGEST)
@example(str(2**63))
@example("１")
def test_any_text_is_a_canonical_id_or_a_client_error(text: str) -> None:
    try:
        result = parse_id([text])
    except MissingId:
        assert text == ""
        return
    except InvalidId:
        assert not _expected_valid(text)
        return
    assert _expected_valid(text)
    assert result == text
    number = int(result)
    assert 1 <= number <= 2**63 - 1
    assert result == str(number)  # canonical decimal: ASCII, no sign, no leading zero, no spaces


@given(st.lists(st.text(max_size=25), max_size=4))
def test_any_list_of_values_gives_one_id_or_a_client_error(values: list[str]) -> None:
    try:
        result = parse_id(values)
    except (MissingId, InvalidId):
        return
    assert set(values) == {result}
    assert result == str(int(result)) and 1 <= int(result) <= 2**63 - 1
