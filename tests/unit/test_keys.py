"""Business keys: ids are `key::value`, checked before anything is stored."""

from __future__ import annotations

import dataclasses
import re
import string
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hephaestus import HephaestusError, InvalidBusinessKeyError, InvalidUniqueError, Unique
from hephaestus.core.keys import (
    ID_MAX_LENGTH,
    SCOPES,
    build_id,
    parse_id,
    validate_id,
    with_suffix,
)

ORDER_UUID = "3f2b9c1e-8d4a-4f6b-9a2e-1c0d5e7f8a9b"


VALID_VALUES = [
    "abc123",  # what was always accepted
    "42",
    ORDER_UUID,
    ORDER_UUID.upper(),
    "EXP-42",
    "order_123",
    "ABC123",
    "jane.doe@example.com",
    "jane.doe+orders@example.com",
    "urn:isbn:0451450523",
    "a:b",
    "v1.2.3",
    "-",
    "_leading_underscore",
    "x" * 200,
]

# (value, what the message says is wrong)
MALFORMED_VALUES = [
    ("", "it is empty"),
    ("x" * 201, "is too long (201 characters; at most 200)"),
    ("abc 123", "it has the whitespace ' ' at index 3 (strip or remove it)"),
    (" abc", "it has the whitespace ' ' at index 0"),
    ("abc ", "it has the whitespace ' ' at index 3"),
    ("abc\n", "it has the control character '\\n' at index 3 (strip or remove it)"),
    ("a\tb", "it has the control character '\\t' at index 1"),
    ("a\x00b", "it has the control character '\\x00' at index 1"),
    ("a\x7fb", "it has the control character '\\x7f' at index 1"),
    ("é", "it has the non-ASCII character 'é' at index 0 (map the value to ASCII"),
    ("cafe\u0301", "it has the non-ASCII character"),
    ("a\u200bb", "it has the non-ASCII character '\\u200b' at index 1"),
    ("\uff21BC", "it has the non-ASCII character '\uff21' at index 0"),  # fullwidth A
    ("a/b", "it has the character '/' at index 1 (it is not allowed)"),
    ("a#1", "it has the character '#' at index 1"),
    ("50%", "it has the character '%' at index 2"),
    ("abc::123", "it contains '::' at index 3, which separates the key from the value"),
    ("a:::b", "it contains '::' at index 1"),
    ("::", "it contains '::' at index 0"),
    (":abc", "it starts with ':', which would make the id ambiguous next to '::'"),
    ("abc:", "it ends with ':', which would make the id ambiguous next to '::'"),
    (":", "it starts with ':'"),
]


class TestBuildId:
    def test_key_and_value(self) -> None:
        assert build_id("orderid", "abc123") == "orderid::abc123"

    def test_digits_only(self) -> None:
        assert build_id("order2", "42") == "order2::42"

    def test_uuid_value(self) -> None:
        assert build_id("orderid", ORDER_UUID) == f"orderid::{ORDER_UUID}"
        generated = str(uuid.UUID(int=0x1234))
        assert build_id("orderid", generated) == f"orderid::{generated}"

    @pytest.mark.parametrize("value", VALID_VALUES)
    def test_values_real_systems_use(self, value: str) -> None:
        assert build_id("orderid", value) == f"orderid::{value}"

    def test_values_are_case_sensitive(self) -> None:
        assert build_id("orderid", "EXP-42") != build_id("orderid", "exp-42")

    @pytest.mark.parametrize(("value", "problem"), MALFORMED_VALUES)
    def test_malformed_value(self, value: str, problem: str) -> None:
        with pytest.raises(InvalidBusinessKeyError) as info:
            build_id("orderid", value)
        message = str(info.value)
        shown = repr(value) if len(value) <= 80 else repr(value[:80])
        assert message.startswith(f"business key value {shown}")
        assert "for key 'orderid' is malformed: " in message
        assert problem in message
        assert "a value is 1 to 200 ASCII letters, digits and - _ . @ + :, " in message
        assert "e.g. 'EXP-42' or 'jane.doe@example.com'" in message
        assert "\n" not in message

    def test_a_long_value_is_shown_cut_short(self) -> None:
        with pytest.raises(InvalidBusinessKeyError) as info:
            build_id("orderid", "x" * 10_000)
        message = str(info.value)
        assert f"{'x' * 80!r}... (10000 characters)" in message
        assert len(message) < 500

    @pytest.mark.parametrize("value", [123, None, b"abc123", ["abc"]])
    def test_value_that_is_not_a_str(self, value: object) -> None:
        with pytest.raises(
            InvalidBusinessKeyError,
            match=re.escape(f"is malformed: it is of type {type(value).__name__}, not str"),
        ):
            build_id("orderid", value)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("key", "problem"),
        [
            ("OrderId", "it has the character 'O' at index 0"),
            ("order_id", "it has the character '_' at index 5"),
            ("order-id", "it has the character '-' at index 5"),
            ("", "it is empty"),
            ("order id", "it has the whitespace ' ' at index 5"),
            ("x" * 41, "it is too long (41 characters; at most 40)"),
            (7, "it is of type int, not str"),
            (None, "it is of type NoneType, not str"),
        ],
    )
    def test_malformed_key(self, key: object, problem: str) -> None:
        with pytest.raises(
            InvalidBusinessKeyError,
            match=re.escape(
                f"business key {key!r} is malformed: {problem}; "
                "a key is 1 to 40 lowercase letters and digits ([a-z0-9]+)"
            ),
        ):
            build_id(key, "abc123")  # type: ignore[arg-type]

    def test_longest_key_and_value(self) -> None:
        longest = build_id("k" * 40, "v" * 200)
        assert len(longest) == 242
        assert len(with_suffix(longest, "0a1b2c3d")) == ID_MAX_LENGTH == 252


class TestParseId:
    def test_splits_key_and_value(self) -> None:
        assert parse_id("orderid::abc123") == ("orderid", "abc123")

    def test_uuid_value(self) -> None:
        assert parse_id(f"orderid::{ORDER_UUID}") == ("orderid", ORDER_UUID)

    def test_suffix_is_not_part_of_the_value(self) -> None:
        assert parse_id("orderid::abc123::0a1b2c3d") == ("orderid", "abc123")

    def test_round_trips_with_build_id(self) -> None:
        assert parse_id(build_id("invoice", "2026")) == ("invoice", "2026")

    @pytest.mark.parametrize("value", VALID_VALUES)
    def test_values_real_systems_use(self, value: str) -> None:
        assert parse_id(f"orderid::{value}") == ("orderid", value)
        assert parse_id(f"orderid::{value}::0a1b2c3d") == ("orderid", value)

    def test_a_value_that_looks_like_a_suffix_is_the_value(self) -> None:
        assert parse_id("orderid::0a1b2c3d") == ("orderid", "0a1b2c3d")
        assert parse_id("orderid::0a1b2c3d::ffffffff") == ("orderid", "0a1b2c3d")

    def test_single_colons_stay_in_the_value(self) -> None:
        assert parse_id("user::urn:x:1::0a1b2c3d") == ("user", "urn:x:1")

    def test_malformed(self) -> None:
        with pytest.raises(InvalidBusinessKeyError, match=r"'orderid:abc123' is malformed"):
            parse_id("orderid:abc123")


# (id, what the message says is wrong)
MALFORMED_IDS = [
    ("OrderId::abc123", "its key 'OrderId' has the character 'O' at index 0"),
    ("order_id::abc123", "its key 'order_id' has the character '_' at index 5"),
    (f"{'k' * 41}::abc123", "is too long (41 characters; at most 40)"),
    ("orderid::abc 123", "its value 'abc 123' has the whitespace ' ' at index 3"),
    (" orderid::abc123", "its key ' orderid' has the whitespace ' ' at index 0"),
    ("orderid::abc123\n", "its value 'abc123\\n' has the control character '\\n' at index 6"),
    ("orderid::a\x1bb", "has the control character '\\x1b' at index 1"),
    ("orderid::é", "its value 'é' has the non-ASCII character 'é' at index 0"),
    ("orderid::a/b", "its value 'a/b' has the character '/' at index 1"),
    ("orderid:abc123", "it has no '::' between the key and the value"),
    ("orderidabc123", "it has no '::' between the key and the value"),
    ("::abc123", "its key '' is empty"),
    ("orderid::", "its value '' is empty"),
    ("::", "its key '' is empty"),
    ("", "it has no '::' between the key and the value"),
    (f"orderid::{'x' * 201}", "is too long (201 characters; at most 200)"),
    (f"orderid::{'x' * 300}", "it is too long (309 characters; at most 252)"),
    ("orderid::abc123::", "its value 'abc123::' contains '::' at index 6"),
    ("orderid::abc123::xyz", "its value 'abc123::xyz' contains '::' at index 6"),
    ("orderid::abc123::0A1B2C3D", "(a suffix after a second '::' is 8 lowercase hex digits)"),
    ("orderid::abc123::0a1b2c3d4", "contains '::' at index 6"),
    ("orderid::abc123::0a1b2c3d::ff", "its value 'abc123::0a1b2c3d::ff' contains '::' at index 6"),
    ("orderid::a::b", "its value 'a::b' contains '::' at index 1"),
    ("orderid:::abc", "its value ':abc' starts with ':'"),
    ("orderid::abc:", "its value 'abc:' ends with ':'"),
    ("orderid::abc:::0a1b2c3d", "its value 'abc:' ends with ':'"),
    ("orderid::::0a1b2c3d", "its value '::0a1b2c3d' contains '::' at index 0"),
]


class TestValidateId:
    @pytest.mark.parametrize(
        "instance_id",
        [
            "orderid::abc123",
            "a::b",
            "x1::00",
            f"orderid::{ORDER_UUID}",
            "orderid::abc123::0a1b2c3d",
            "orderid::EXP-42",
            "orderid::order_123",
            "user::jane.doe@example.com",
            "user::jane.doe@example.com::0a1b2c3d",
            "isbn::urn:isbn:0451450523",
            f"{'k' * 40}::{'v' * 200}::0a1b2c3d",
        ],
    )
    def test_valid_ids_are_returned(self, instance_id: str) -> None:
        assert validate_id(instance_id) == instance_id

    @pytest.mark.parametrize(("instance_id", "problem"), MALFORMED_IDS)
    def test_malformed_ids(self, instance_id: str, problem: str) -> None:
        with pytest.raises(InvalidBusinessKeyError) as info:
            validate_id(instance_id)
        message = str(info.value)
        shown = repr(instance_id) if len(instance_id) <= 80 else repr(instance_id[:80])
        assert message.startswith(f"instance id {shown}")
        assert " is malformed: " in message
        assert problem in message
        assert message.endswith(
            "an id is 'key::value', or 'key::value::xxxxxxxx' with an 8-hex-digit suffix, "
            "e.g. 'orderid::EXP-42'"
        )
        assert "\n" not in message

    @pytest.mark.parametrize("instance_id", [None, 123, b"orderid::abc123", ("orderid", "abc")])
    def test_non_str(self, instance_id: object) -> None:
        with pytest.raises(
            InvalidBusinessKeyError,
            match=re.escape(f"is malformed: it is of type {type(instance_id).__name__}, not str"),
        ):
            validate_id(instance_id)

    def test_is_a_hephaestus_error(self) -> None:
        with pytest.raises(HephaestusError):
            validate_id("nope")


class TestWithSuffix:
    def test_appends_the_suffix(self) -> None:
        assert with_suffix("orderid::abc123", "0a1b2c3d") == "orderid::abc123::0a1b2c3d"

    def test_suffixed_ids_are_valid_and_distinct(self) -> None:
        first = with_suffix("orderid::abc123", "0a1b2c3d")
        second = with_suffix("orderid::abc123", "ffffffff")
        assert first != second
        assert validate_id(first) == first
        assert parse_id(first) == parse_id(second) == ("orderid", "abc123")

    def test_uuid_value(self) -> None:
        assert (
            with_suffix(f"orderid::{ORDER_UUID}", "00000000") == f"orderid::{ORDER_UUID}::00000000"
        )

    def test_a_value_with_colons(self) -> None:
        assert with_suffix("isbn::urn:isbn:1", "00000000") == "isbn::urn:isbn:1::00000000"

    @pytest.mark.parametrize(
        "suffix", ["", "0a1b2c3", "0a1b2c3d4", "0A1B2C3D", "zzzzzzzz", 12345678]
    )
    def test_malformed_suffix(self, suffix: object) -> None:
        with pytest.raises(
            InvalidBusinessKeyError,
            match=re.escape(f"id suffix {suffix!r} must be 8 lowercase hex digits"),
        ):
            with_suffix("orderid::abc123", suffix)  # type: ignore[arg-type]

    def test_malformed_id(self) -> None:
        with pytest.raises(InvalidBusinessKeyError, match=r"'orderid:abc' is malformed"):
            with_suffix("orderid:abc", "0a1b2c3d")

    def test_already_suffixed_id(self) -> None:
        with pytest.raises(InvalidBusinessKeyError, match=r"already has a suffix"):
            with_suffix("orderid::abc123::0a1b2c3d", "ffffffff")


# --- properties ------------------------------------------------------------------------------

VALUE_ALPHABET = string.ascii_letters + string.digits + "-_.@+:"
keys = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=40)
suffixes = st.text("0123456789abcdef", min_size=8, max_size=8)
# Runs without ':' joined by single colons: every value the rule accepts, and only those.
values = (
    st.lists(st.text(VALUE_ALPHABET.replace(":", ""), min_size=1, max_size=30), min_size=1)
    .map(":".join)
    .filter(lambda value: len(value) <= 200)
)


def accepted(value: str) -> bool:
    """The value rule, written out plainly."""
    return (
        1 <= len(value) <= 200
        and all(char in VALUE_ALPHABET for char in value)
        and "::" not in value
        and not value.startswith(":")
        and not value.endswith(":")
    )


@settings(max_examples=300, deadline=None)
@given(key=keys, value=values, suffix=suffixes)
def test_every_accepted_value_round_trips(key: str, value: str, suffix: str) -> None:
    instance_id = build_id(key, value)
    assert validate_id(instance_id) == instance_id
    assert parse_id(instance_id) == (key, value)
    suffixed = with_suffix(instance_id, suffix)
    assert validate_id(suffixed) == suffixed
    assert parse_id(suffixed) == (key, value)


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(
        st.text(VALUE_ALPHABET, max_size=12),
        st.text(VALUE_ALPHABET + " \t\n\x00é/#", max_size=12),
        st.text(max_size=12),
    )
)
def test_build_id_accepts_exactly_the_rule(value: str) -> None:
    if accepted(value):
        assert parse_id(build_id("k", value)) == ("k", value)
    else:
        with pytest.raises(InvalidBusinessKeyError, match=r"for key 'k' is malformed: it "):
            build_id("k", value)


@settings(max_examples=300, deadline=None)
@given(instance_id=st.text(VALUE_ALPHABET + "abcdef", max_size=24))
def test_every_valid_id_is_rebuilt_from_its_parts(instance_id: str) -> None:
    """Ids split one way only: a valid id is its key, its value and its suffix, if any."""
    try:
        validate_id(instance_id)
    except InvalidBusinessKeyError:
        return
    key, value = parse_id(instance_id)
    rebuilt = build_id(key, value)
    if rebuilt != instance_id:
        assert instance_id.startswith(f"{rebuilt}::")
        assert with_suffix(rebuilt, instance_id[len(rebuilt) + 2 :]) == instance_id


class TestUnique:
    def test_default_scope_is_workflow(self) -> None:
        assert Unique(key="orderid").scope == "workflow"

    @pytest.mark.parametrize("scope", SCOPES)
    def test_every_scope(self, scope: str) -> None:
        assert Unique(key="orderid", scope=scope).scope == scope  # type: ignore[arg-type]

    def test_scopes(self) -> None:
        assert SCOPES == ("workflow", "version", "global", "none")

    @pytest.mark.parametrize("key", ["OrderId", "order_id", "order-id", "order id", "", "id\n", 5])
    def test_malformed_key(self, key: object) -> None:
        with pytest.raises(
            InvalidUniqueError,
            match=re.escape(
                f"Unique key {key!r} is malformed: use lowercase letters and digits only"
            ),
        ):
            Unique(key=key)  # type: ignore[arg-type]

    def test_key_length(self) -> None:
        assert Unique(key="k" * 40).key == "k" * 40
        with pytest.raises(
            InvalidUniqueError,
            match=re.escape(f"Unique key {'k' * 41!r} is too long (41 characters): use at most 40"),
        ):
            Unique(key="k" * 41)

    @pytest.mark.parametrize("scope", ["tenant", "Workflow", "", None])
    def test_unknown_scope(self, scope: object) -> None:
        with pytest.raises(
            InvalidUniqueError,
            match=re.escape(
                f"Unique scope {scope!r} is not one of workflow, version, global, none"
            ),
        ):
            Unique(key="orderid", scope=scope)  # type: ignore[arg-type]

    def test_is_a_frozen_value(self) -> None:
        unique = Unique(key="orderid", scope="global")
        assert unique == Unique(key="orderid", scope="global")
        assert unique != Unique(key="orderid", scope="workflow")
        assert len({unique, Unique(key="orderid", scope="global")}) == 1
        with pytest.raises(dataclasses.FrozenInstanceError):
            unique.key = "other"  # type: ignore[misc]
