"""``wire.packers.packb``: msgpack's ``packb`` on packers reused per thread -- same bytes, reentrant, and nothing of
one call (its ``default``, a large buffer) kept by the thread afterwards."""

from __future__ import annotations

import threading
from typing import Any

import msgpack
import pytest

from meshaios.wire import packers
from meshaios.wire.packers import packb


class Box:
    def __init__(self, v: Any) -> None:
        self.v = v


def test_same_bytes_as_msgpack_for_plain_and_defaulted_values() -> None:
    for value in (None, 1, -(2**40), 1.5, "é", b"\x00" * 300, [1, [2, {"a": b"b"}]], {"x": [None, True]}):
        assert packb(value) == msgpack.packb(value, use_bin_type=True)
    assert packb((1, 2)) == msgpack.packb([1, 2])  # a tuple is a list unless strict

    def default(o: Any) -> Any:
        return msgpack.ExtType(7, packb(o.v, default))  # reentrant: packs while the outer packer is busy

    nested = Box(Box([1, Box("deep")]))
    want = msgpack.packb(nested, default=lambda o: msgpack.ExtType(7, msgpack.packb(o.v, default=default)))
    assert packb(nested, default) == want


def test_strict_types_send_tuples_to_default() -> None:
    seen: list[Any] = []

    def default(o: Any) -> Any:
        seen.append(o)
        return list(o)

    assert packb((1, 2), default, strict_types=True) == msgpack.packb([1, 2])
    assert seen == [(1, 2)]
    assert packb((3,), strict_types=False) == msgpack.packb([3])  # kinds do not share packers


def test_a_failed_pack_leaves_nothing_behind() -> None:
    with pytest.raises(TypeError):
        packb([1, 2, Box(3)])  # no default: refused
    def boom(o: Any) -> Any:
        raise ValueError("no")

    with pytest.raises(ValueError):
        packb(["x" * 1000, Box(1)], boom)
    assert packb([1, 2]) == msgpack.packb([1, 2])  # no partial output from the failed calls
    for _packer, hook in packers._idle.loose:
        assert hook.fn is None  # the default of a finished call is not referenced


def test_a_large_result_does_not_keep_its_buffer() -> None:
    packb(b"x")
    before = len(packers._idle.loose)
    big = packb(b"\x01" * (packers.KEEP_BYTES + 1))
    assert len(big) > packers.KEEP_BYTES
    assert len(packers._idle.loose) == before - 1  # that packer was dropped, not put back


def test_threads_pack_at_once_on_packers_of_their_own() -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(2000):
                value = {"i": i, "j": j, "l": [i] * (j % 7)}
                assert packb(value, lambda o: o) == msgpack.packb(value)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
