"""The compiled message checks (``messages.compile_fields``, ``check_message``'s quick yes) give the walk's verdict:
never a yes where the walk says no, and the walk's own error wherever a message is refused."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshaios.errors import WireError
from meshaios.wire import messages as M
from meshaios.wire.codec import decode, encode
from tests.unit.test_codec import bytes_frames, msgpack_values, payload_of, valid_messages


class Name(str):
    """A str subclass: never made by msgpack, so left to the walk (which takes it for a str)."""


ODD = [True, False, 0, 1, -1, 1.5, "", "a", "x" * (M.MAX_ID + 1), "a\x00", Name("a"), Name("b\x00"), None, b"a", [],
       ["a"], ["a", 3], ["", "b"], ["b\x00"], [Name("c")], [Name("c\x00")], [True], {}, {"id": "a"}, {"k": 1},
       # dependency tables and resources of a run task
       {"d": None}, {"d": {"loc": ["n1"], "size": 3}}, {"d": {"loc": [1]}}, {"d": {"size": True}}, {"": None},
       {"d\x00": None}, {Name("d"): None}, {"cpu": 1}, {"cpu": 1.5}, {"cpu": True}, {3: None}]  # fmt: skip
KEYS = ["id", "ok", "v", "fn", "args", "deps", "tasks", "results", "ids", "src", "req", "t", "client", "owner", "att",
        "pure", "resources", "c", "ep", "device", "fr", "parts", "urg", "retries", "err", "size"]  # fmt: skip

odd_values = st.one_of(msgpack_values, st.sampled_from(ODD), st.just(payload_of(1)))


def verdict(check: Any, msg: Any) -> str:
    try:
        check(msg)
    except WireError as exc:
        return str(exc)
    return "ok"


def mutated(msg: dict[str, Any], where: int, key: str, value: Any, drop: bool) -> dict[str, Any]:
    """``msg`` with one field set to ``value`` (or removed): at its top level, or in one of its nested items."""
    out = dict(msg)
    nested = next((k for k in ("tasks", "results", "ids") if isinstance(out.get(k), list) and out[k]), None)
    if where == 0 or nested is None:
        target = out
    else:
        items = list(out[nested])
        i = where % len(items)
        if not isinstance(items[i], dict):
            items[i] = value
            out[nested] = items
            return out
        items[i] = target = dict(items[i])
        out[nested] = items
    if drop:
        target.pop(key, None)
    else:
        target[key] = value
    return out


@pytest.mark.parametrize("msg", valid_messages(), ids=lambda m: m["t"])
def test_every_one_field_change_gets_the_walks_verdict(msg: dict[str, Any]) -> None:
    """Each field of the message, and of its first task or result, removed or set to each odd value in turn."""
    for where in (0, 1):
        for key in KEYS:
            for value, drop in [(None, True), *((v, False) for v in [*ODD, payload_of(1)])]:
                m = mutated({"v": M.PROTOCOL_VERSION, **msg}, where, key, value, drop)
                assert verdict(M.check_message, m) == verdict(M.check_in_full, m), (where, key, value, drop)


@given(st.sampled_from(valid_messages()), st.integers(0, 3), st.sampled_from(KEYS), odd_values, st.booleans())
@settings(max_examples=1000)
def test_the_quick_check_agrees_with_the_walk(
    msg: dict[str, Any], where: int, key: str, value: Any, drop: bool
) -> None:
    m = mutated({"v": M.PROTOCOL_VERSION, **msg}, where, key, value, drop)
    assert verdict(M.check_message, m) == verdict(M.check_in_full, m)


@pytest.mark.parametrize("msg", valid_messages(), ids=lambda m: m["t"])
def test_every_valid_example_passes_both_ways(msg: dict[str, Any]) -> None:
    out = decode(bytes_frames(encode(msg)))
    assert M.check_in_full(out) is out
    fast = M._FAST.get(out["t"])
    assert fast is None or fast(out)  # the quick check does take the common messages


def test_compiled_fields_are_exact_and_never_looser() -> None:
    ok = M.compile_fields(M.SUBMIT_TASK)
    task = {"id": "a", "fn": payload_of(1), "args": payload_of(2), "deps": []}
    assert ok(task)
    assert not ok({**task, "deps": ()})
    assert not ok({k: v for k, v in task.items() if k != "fn"})
    assert not ok({**task, "id": Name("a")})  # a subclass: the walk decides (it passes)
    assert M.check_fields({**task, "id": Name("a")}, M.SUBMIT_TASK, "t")
    assert not ok([task])
    assert not ok(None)
    any_ok = M.compile_fields({"x": (object, bool), "n": (int, float)})
    assert any_ok({"x": None, "n": 1.5})
    assert any_ok({"x": True, "n": 2})
    assert not any_ok({"n": 1})
    assert not any_ok({"x": 1, "n": True})


def test_a_str_subclass_id_in_a_list_is_still_checked() -> None:
    msg = {"t": M.RELEASE, "ids": ["a", Name("b\x00")]}
    with pytest.raises(WireError, match="an id must be"):
        M.check_message(msg)
