"""Every limit of the JSON tree checks (engine/files/jsontree.py loads + check_tree), one
table, each at the limit, one past it and one inside it.

Values from README's "Limits" table, row "any JSON value": integers within ±2^64 (2^64 − 1 is
the largest a size may be, README "sizes 0 … 2^64 − 1"; 2^64 is refused), strings ≤ 4096
characters (a Linux path is at most PATH_MAX = 4096 bytes), keys ≤ 64, ≤ 200,000 entries
per list or object, nesting ≤ 16 (counted as containers: 16 nested objects around a number
are allowed, 17 are not), no key twice, numbers finite.  "Longer literals are refused unread":
an integer literal of more than 40 digits (jsontree.MAX_INT_DIGITS; not in README — 2^64
has 20 digits, so any 21- to 40-digit literal is refused by value, from 41 unconverted) is
kept as text and refused naming its digit count.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.files.jsontree import BigInt, check_tree, loads
from engine.util.errors import ConfigError

OK = None
_RANGE = "is beyond any field's range (±2^64)"


def _nest(n: int, leaf: Any = 0) -> Any:
    """``n`` objects nested around ``leaf`` (``{"k": {"k": … leaf}}``): the leaf at depth n."""
    for _ in range(n):
        leaf = {"k": leaf}
    return leaf


def _path(n: int) -> str:
    return ".".join(["k"] * n)


TABLE = [
    # nesting: a leaf at depth 16 is allowed, at 17 refused (naming the leaf's path)
    pytest.param(_nest(15), OK, id="depth=15"),
    pytest.param(_nest(16), OK, id="depth=16"),
    pytest.param(_nest(17), (_path(17), "is nested more than 16 levels deep"), id="depth=17"),
    pytest.param(_nest(16, {}), OK, id="depth=16-empty-object"),  # the {} itself is at 16
    pytest.param(
        _nest(17, {}), (_path(17), "is nested more than 16 levels deep"), id="depth=17-empty-object"
    ),
    pytest.param([[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]], OK, id="depth=16-lists"),
    pytest.param(
        [[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]],
        ("[0]" * 16 + "[0]", "is nested more than 16 levels deep"),
        id="depth=17-lists",
    ),
    # integers: -2^64 < n < 2^64
    pytest.param({"n": (1 << 64) - 2}, OK, id="int=2^64-2"),
    pytest.param({"n": (1 << 64) - 1}, OK, id="int=2^64-1"),
    pytest.param({"n": 1 << 64}, ("n", f"18446744073709551616 {_RANGE}"), id="int=2^64"),
    pytest.param({"n": -(1 << 64) + 2}, OK, id="int=-(2^64-2)"),
    pytest.param({"n": -(1 << 64) + 1}, OK, id="int=-(2^64-1)"),
    pytest.param({"n": -(1 << 64)}, ("n", f"-18446744073709551616 {_RANGE}"), id="int=-2^64"),
    # strings: ≤ 4096 characters
    pytest.param({"s": "x" * 4095}, OK, id="str=4095"),
    pytest.param({"s": "x" * 4096}, OK, id="str=4096"),
    pytest.param(
        {"s": "x" * 4097},
        ("s", "is a string of 4,097 characters; the limit is 4096"),
        id="str=4097",
    ),
    # keys: ≤ 64 characters
    pytest.param({"k" * 63: 0}, OK, id="key=63"),
    pytest.param({"k" * 64: 0}, OK, id="key=64"),
    pytest.param(
        {"k" * 65: 0}, ("k" * 63, "a key of 65 characters; keys are at most 64"), id="key=65"
    ),
    # entries: ≤ 200,000 per list or object
    pytest.param({"l": [0] * 199_999}, OK, id="list=199999"),
    pytest.param({"l": [0] * 200_000}, OK, id="list=200000"),
    pytest.param(
        {"l": [0] * 200_001}, ("l", "has 200,001 entries; the limit is 200,000"), id="list=200001"
    ),
    pytest.param({"o": {str(i): 0 for i in range(200_000)}}, OK, id="object=200000"),
    pytest.param(
        {"o": {str(i): 0 for i in range(200_001)}},
        ("o", "has 200,001 entries; the limit is 200,000"),
        id="object=200001",
    ),
    pytest.param(
        [0] * 200_001, ("session", "has 200,001 entries; the limit is 200,000"), id="top=200001"
    ),
    # numbers finite
    pytest.param({"f": 1.7976931348623157e308}, OK, id="float=max"),
    pytest.param({"f": float("inf")}, ("f", "must be a finite number"), id="float=inf"),
    pytest.param({"f": float("nan")}, ("f", "must be a finite number"), id="float=nan"),
]

TEXT_TABLE = [
    # integer literals: up to 40 digits converted (and refused by value), from 41 kept unread
    pytest.param("1" + "0" * 19, OK, id="digits=20(10^19)"),
    pytest.param("1" * 39, ("n", _RANGE), id="digits=39"),
    pytest.param("1" * 40, ("n", _RANGE), id="digits=40"),
    pytest.param("1" * 41, ("n", f"({41} digits) is beyond any field's range"), id="digits=41"),
    pytest.param("-" + "1" * 40, ("n", _RANGE), id="digits=-40"),
    pytest.param("-" + "1" * 41, ("n", "(41 digits) is beyond any field's range"), id="digits=-41"),
    pytest.param('1, "n": 2', ("n", "is given twice in the same object; keep one"), id="key-twice"),
]


@pytest.mark.parametrize(("value", "refused"), TABLE)
def test_tree_limit(value: Any, refused: tuple[str, str] | None) -> None:
    """check_tree at each limit (accepted), one past (refused naming the path and the rule)
    and one inside (accepted); sources in the module docstring."""
    if refused is None:
        check_tree(value)
        return
    field, rule = refused
    with pytest.raises(ConfigError) as err:
        check_tree(value)
    assert err.value.field.startswith(field), str(err.value)
    assert rule in err.value.rule, str(err.value)


@pytest.mark.parametrize(("literal", "refused"), TEXT_TABLE)
def test_text_limit(literal: str, refused: tuple[str, str] | None) -> None:
    """loads then check_tree on ``{"n": <literal>}``: the digit limit (40 converted, 41 kept
    as text and named by its digit count) and a key given twice."""
    text = '{"n": ' + literal + "}"
    value = loads(text, "s.json")
    digits = len(literal.lstrip("-"))
    if literal.lstrip("-").isdigit():
        assert isinstance(value["n"], BigInt) == (digits > 40)
        if digits <= 40:
            assert value["n"] == json.loads(text)["n"]
    if refused is None:
        check_tree(value)
        return
    field, rule = refused
    with pytest.raises(ConfigError) as err:
        check_tree(value)
    assert err.value.field == field, str(err.value)
    assert rule in err.value.rule, str(err.value)
