"""Business keys: ids are `key::value`, checked before anything is stored."""

from __future__ import annotations

import dataclasses
import re
import uuid

import pytest

from hephaestus import HephaestusError, InvalidBusinessKeyError, InvalidUniqueError, Unique
from hephaestus.core.keys import SCOPES, build_id, parse_id, validate_id, with_suffix

ORDER_UUID = "3f2b9c1e-8d4a-4f6b-9a2e-1c0d5e7f8a9b"


class TestBuildId:
    def test_key_and_value(self) -> None:
        assert build_id("orderid", "abc123") == "orderid::abc123"

    def test_digits_only(self) -> None:
        assert build_id("order2", "42") == "order2::42"

    def test_uuid_value(self) -> None:
        assert build_id("orderid", ORDER_UUID) == f"orderid::{ORDER_UUID}"
        generated = str(uuid.UUID(int=0x1234))
        assert build_id("orderid", generated) == f"orderid::{generated}"

    @pytest.mark.parametrize(
        "value",
        ["ABC123", "abc 123", "abc-123", "", "abc::123", "abc\n", ORDER_UUID.upper(), "é"],
    )
    def test_malformed_value(self, value: str) -> None:
        with pytest.raises(
            InvalidBusinessKeyError,
            match=re.escape(
                f"business key value {value!r} for key 'orderid' is malformed: "
                "use lowercase letters and digits ([a-z0-9]+) or a lowercase UUID"
            ),
        ):
            build_id("orderid", value)

    @pytest.mark.parametrize("value", [123, None, b"abc123", ["abc"]])
    def test_value_that_is_not_a_str(self, value: object) -> None:
        with pytest.raises(InvalidBusinessKeyError, match=r"is malformed"):
            build_id("orderid", value)  # type: ignore[arg-type]

    @pytest.mark.parametrize("key", ["OrderId", "order_id", "", "order id", 7, None])
    def test_malformed_key(self, key: object) -> None:
        with pytest.raises(
            InvalidBusinessKeyError,
            match=re.escape(f"business key {key!r} is malformed: use [a-z0-9]+"),
        ):
            build_id(key, "abc123")  # type: ignore[arg-type]


class TestParseId:
    def test_splits_key_and_value(self) -> None:
        assert parse_id("orderid::abc123") == ("orderid", "abc123")

    def test_uuid_value(self) -> None:
        assert parse_id(f"orderid::{ORDER_UUID}") == ("orderid", ORDER_UUID)

    def test_suffix_is_not_part_of_the_value(self) -> None:
        assert parse_id("orderid::abc123::0a1b2c3d") == ("orderid", "abc123")

    def test_round_trips_with_build_id(self) -> None:
        assert parse_id(build_id("invoice", "2026")) == ("invoice", "2026")

    def test_malformed(self) -> None:
        with pytest.raises(InvalidBusinessKeyError, match=r"'orderid:abc123' is malformed"):
            parse_id("orderid:abc123")


MALFORMED_IDS = [
    "OrderId::abc123",  # uppercase key
    "orderid::ABC123",  # uppercase value
    "orderid::abc 123",  # space
    " orderid::abc123",  # leading space
    "orderid::abc123\n",  # trailing newline
    "orderid:abc123",  # single colon
    "orderidabc123",  # no separator
    "::abc123",  # empty key
    "orderid::",  # empty value
    "::",
    "",
    "orderid::abc123::",  # empty suffix
    "orderid::abc123::xyz",  # suffix not hex
    "orderid::abc123::0A1B2C3D",  # suffix uppercase
    "orderid::abc123::0a1b2c3d4",  # suffix too long
    "orderid::abc123::0a1b2c3d::ff",  # too many parts
    f"orderid::{ORDER_UUID.upper()}",  # uppercase UUID
    "order_id::abc123",  # underscore
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
        ],
    )
    def test_valid_ids_are_returned(self, instance_id: str) -> None:
        assert validate_id(instance_id) == instance_id

    @pytest.mark.parametrize("instance_id", MALFORMED_IDS)
    def test_malformed_ids(self, instance_id: str) -> None:
        with pytest.raises(InvalidBusinessKeyError) as info:
            validate_id(instance_id)
        message = str(info.value)
        assert repr(instance_id) in message
        assert "expected 'key::value' with key and value in [a-z0-9]+" in message
        assert "e.g. 'orderid::abc123'" in message

    @pytest.mark.parametrize("instance_id", [None, 123, b"orderid::abc123", ("orderid", "abc")])
    def test_non_str(self, instance_id: object) -> None:
        with pytest.raises(InvalidBusinessKeyError, match=r"is malformed: expected 'key::value'"):
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
