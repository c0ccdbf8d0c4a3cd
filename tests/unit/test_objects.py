"""The object store (store/objects.py): memory limit, spill and read-back, hashed spill names, the spill thread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from meshaios.store.objects import ObjectStore, spill_name
from meshaios.wire.payload import Payload


def obj(n: int, fill: int = 1) -> Payload:
    return Payload(b"meta", (np.full(n, fill, dtype=np.uint8),))


def content(p: Payload | None) -> bytes:
    assert p is not None
    return p.blob + b"".join(bytes(memoryview(b)) for b in p.buffers)


def test_put_get_delete_and_the_byte_counts() -> None:
    s = ObjectStore(1 << 20, None)
    s.put("a", obj(100))
    assert "a" in s
    assert s.size_of("a") == 104
    assert content(s.get("a")) == b"meta" + bytes([1]) * 100
    assert s.stats.bytes_in_memory == 104
    assert s.delete("a")
    assert not s.delete("a")
    assert s.get("a") is None
    assert s.stats.objects == 0
    assert s.stats.bytes_in_memory == 0


def test_beyond_the_limit_the_least_recently_used_spill_and_read_back_exactly(tmp_path: Path) -> None:
    s = ObjectStore(250, tmp_path)
    s.put("a", obj(100, 1))
    s.put("b", obj(100, 2))
    s.get("a")  # a is now the most recently used
    s.put("c", obj(100, 3))
    assert s.on_disk("b")
    assert not s.on_disk("a")
    assert s.stats.bytes_in_memory <= 250
    assert content(s.get("b")) == b"meta" + bytes([2]) * 100
    assert s.stats.unspill_events == 1
    assert s.delete("b")
    assert list(tmp_path.iterdir()) == []  # the spill file went with it


def test_ids_that_once_shared_a_spill_file_no_longer_do(tmp_path: Path) -> None:
    s = ObjectStore(0, tmp_path)  # everything but the newest spills
    s.put("coll/a", obj(10, 1))
    s.put("coll_a", obj(10, 2))
    s.put("x", obj(1))
    assert spill_name("coll/a") != spill_name("coll_a")
    assert content(s.get("coll/a")) == b"meta" + bytes([1]) * 10
    assert content(s.get("coll_a")) == b"meta" + bytes([2]) * 10


@pytest.mark.parametrize("key", ["nul\x00byte", "x" * 300, "../../etc/passwd", "sh#ard/0"])
def test_any_id_spills_to_a_plain_file_in_the_spill_dir(tmp_path: Path, key: str) -> None:
    s = ObjectStore(0, tmp_path)
    s.put(key, obj(10))
    s.put("newer", obj(1))
    assert s.on_disk(key)
    assert s.stats.spill_failures == 0
    (f,) = [p for p in tmp_path.iterdir() if p.name == spill_name(key)]
    assert f.parent == tmp_path
    assert content(s.get(key)) == b"meta" + bytes([1]) * 10


def test_a_spill_that_fails_keeps_the_object_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    s = ObjectStore(0, blocker / "spill")
    s.put("a", obj(10))
    s.put("b", obj(10))
    assert s.stats.spill_failures >= 1
    assert content(s.get("a")) == b"meta" + bytes([1]) * 10
    assert not s.on_disk("a")


def test_the_background_spiller_writes_off_the_calling_thread_and_stops_on_clear(tmp_path: Path) -> None:
    s = ObjectStore(150, tmp_path, background=True)
    for i in range(5):
        s.put(f"o{i}", obj(100, i))
    s.clear()  # waits for the spill thread, then drops everything
    assert s.stats.objects == 0
    assert s.stats.bytes_in_memory == 0
    assert s.stats.bytes_spilled == 0
    assert s.stats.spill_events >= 1
    assert list(tmp_path.iterdir()) == []


def test_background_spills_land_and_read_back(tmp_path: Path) -> None:
    import threading

    s = ObjectStore(150, tmp_path, background=True)
    main = threading.get_ident()
    writers: list[int] = []
    original = s._spill

    def spy(key: str, payload: Payload) -> None:
        writers.append(threading.get_ident())
        original(key, payload)

    s._spill = spy  # type: ignore[method-assign]
    s.put("a", obj(100, 7))
    s.put("b", obj(100, 8))
    assert s._spiller is not None
    s._spiller.submit(lambda: None).result(timeout=10)  # the spill thread has done what was queued before
    assert writers
    assert main not in writers
    assert s.on_disk("a")
    assert content(s.get("a")) == b"meta" + bytes([7]) * 100
    s.clear()


def test_a_large_object_is_let_go_on_the_release_thread_not_the_callers() -> None:
    """Unmapping 1 GiB of /dev/shm pages takes ~0.3 s: on the event loop that is a SWIM probe timeout. The store's
    last reference to a large object dies on its release thread; a small one's where it is deleted."""
    import threading

    from meshaios.store.objects import RELEASE_OFF_LOOP

    died: dict[str, str] = {}
    gone = threading.Event()

    class Buffer(bytearray):
        def __del__(self) -> None:
            died[bytes(self[:1]).decode()] = threading.current_thread().name
            gone.set()

    s = ObjectStore(1 << 40, None, background=True)
    try:
        big, small = Buffer(b"b" * RELEASE_OFF_LOOP), Buffer(b"s" * 1024)
        s.put("big", Payload(b"", (big,)))
        s.put("small", Payload(b"", (small,)))
        del big, small
        assert s.delete("small")
        assert died["s"] == threading.current_thread().name
        gone.clear()
        assert s.delete("big")
        assert gone.wait(10)
        assert died["b"].startswith("meshaios-free")
    finally:
        s.clear()
