"""`to_json_value` refuses what a storage would refuse or change, naming where it is.

NUL characters (PostgreSQL cannot store them), lone surrogates (not UTF-8
text), and dicts and lists nested deeper than `MAX_DEPTH` (the JSON encoders
would run out of recursion) are refused up front, as `ContextSerializationError`.
"""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from typing import Any

import pytest

from hephaestus import Context, ContextSerializationError
from hephaestus.core.context import MAX_DEPTH, to_json_value


def dicts(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def lists(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def tuples(levels: int) -> tuple[Any, ...]:
    value: tuple[Any, ...] = ()
    for _ in range(levels - 1):
        value = (value,)
    return value


NUL = "string contains a NUL character; PostgreSQL cannot store it"
SURROGATE = "string contains a lone surrogate"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": [1, 2, "x\x00y"]}, f"updates of step charge['a'][2]: {NUL}"),
        ({"a": "\x00"}, f"updates of step charge['a']: {NUL}"),
        ({"k\x00": 1}, f"updates of step charge: key 'k\\x00': {NUL}"),
        (
            {"a": [{"b": {"\x00": None}}]},
            f"updates of step charge['a'][0]['b']: key '\\x00': {NUL}",
        ),
        ({"a": ("t", "u\x00")}, f"updates of step charge['a'][1]: {NUL}"),
        ({"name": "caf\udce9"}, f"updates of step charge['name']: {SURROGATE} '\\udce9'"),
        ({"\ud800": 1}, f"updates of step charge: key '\\ud800': {SURROGATE} '\\ud800'"),
        # Two surrogates that JSON would read back as one emoji: still not text.
        ({"e": "\ud83d\ude00"}, f"updates of step charge['e']: {SURROGATE} '\\ud83d'"),
    ],
)
def test_strings_no_storage_keeps_are_refused_naming_where(value: Any, message: str) -> None:
    with pytest.raises(ContextSerializationError) as info:
        to_json_value(value, what="updates of step charge")
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    "value",
    [
        {"path": "C:\\u0000"},  # a backslash and 'u0000': text, not a NUL
        {"emoji": "😀", "accents": "ünïcödé", "cjk": "漢字"},
        {"\\x00": "\\\\u0000"},
        {"nested": [{"ok": ["fine", "😀"]}]},
    ],
)
def test_text_that_only_looks_like_it_is_kept(value: Any) -> None:
    assert to_json_value(value, what="context") == value


@pytest.mark.parametrize("build", [dicts, lists, tuples])
def test_max_depth_is_allowed_one_more_is_refused(build: Any) -> None:
    assert MAX_DEPTH == 100
    kept = to_json_value(build(MAX_DEPTH), what="context")
    assert kept == to_json_value(build(MAX_DEPTH), what="context")
    with pytest.raises(ContextSerializationError, match=r"nest more than 100 levels deep"):
        to_json_value(build(MAX_DEPTH + 1), what="context")


@pytest.mark.parametrize("build", [dicts, lists, tuples])
def test_a_value_100000_levels_deep_is_refused_not_a_recursion_error(build: Any) -> None:
    with pytest.raises(ContextSerializationError) as info:
        to_json_value(build(100_000), what="updates of step charge")
    message = str(info.value)
    assert message.startswith(
        "updates of step charge: dicts and lists nest more than 100 levels deep (the limit), at "
    )
    assert len(message) < 400  # the path is cut short


def test_depth_counts_mixed_containers_and_siblings() -> None:
    wide = {"a": [1, 2, {"b": "c"}], "d": dicts(MAX_DEPTH - 1), "e": lists(3)}
    assert to_json_value(wide, what="context")["d"] == dicts(MAX_DEPTH - 1)
    wide["d"] = dicts(MAX_DEPTH)
    with pytest.raises(ContextSerializationError, match=r"at context\['d'\]\['a'\]"):
        to_json_value(wide, what="context")


def test_a_start_context_is_checked_the_same_way() -> None:
    with pytest.raises(ContextSerializationError, match=rf"context\['note'\]: {NUL}"):
        Context.new({"note": "\x00"})
    with pytest.raises(ContextSerializationError, match=r"nest more than 100 levels deep"):
        Context.new(dicts(100_000))


def test_the_other_refusals_still_name_the_key() -> None:
    with pytest.raises(ContextSerializationError, match=r"context\['by_id'\] has a non-str key 1"):
        to_json_value({"by_id": {1: "a"}}, what="context")
    with pytest.raises(ContextSerializationError, match=r"context\['x'\] \(a object\)"):
        to_json_value({"x": object()}, what="context")
    assert to_json_value({"t": (1, (2, 3))}, what="context") == {"t": [1, [2, 3]]}


class Text(str):
    pass


Pair = namedtuple("Pair", "left right")


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"a": Text("x\x00")}, "context['a']"),
        ({"a": OrderedDict([("b", [1, "\ud800"])])}, "context['a']['b'][1]"),
        ({"a": Pair("ok", "\x00")}, "context['a'][1]"),
        ({"a": OrderedDict([(Text("k\x00"), 1)])}, "context['a']: key 'k\\x00'"),
    ],
)
def test_subclasses_of_str_dict_and_tuple_are_checked_too(value: Any, where: str) -> None:
    with pytest.raises(ContextSerializationError) as info:
        to_json_value(value, what="context")
    assert str(info.value).startswith(f"{where}: string contains")


def test_a_bare_string_is_checked_too() -> None:
    with pytest.raises(ContextSerializationError, match=rf"^note: {NUL}"):
        to_json_value("a\x00b", what="note")
    assert to_json_value("😀", what="note") == "😀"


def test_a_non_str_key_inside_a_dict_subclass_is_found() -> None:
    with pytest.raises(ContextSerializationError, match=r"context\['a'\]\[0\] has a non-str key 2"):
        to_json_value({"a": (OrderedDict([(2, "b")]),)}, what="context")
