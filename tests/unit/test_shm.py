"""The pure parts of same-host transfers (``meshaios/store/shm.py``): file layout, the checks a receiver makes
before it maps a file, and the cleanup of files whose node died (real files, real flocks, a real killed process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from meshaios.errors import WireError
from meshaios.store import shm
from meshaios.wire.values import dumps, loads

TAG = shm.mesh_tag("mesh-a")


def area(root: Path, node: str = "n1", mesh: str = "mesh-a") -> shm.ShmArea:
    a = shm.ShmArea(mesh, node, root=root)
    assert a.open()
    return a


def test_layout_aligns_every_buffer() -> None:
    offsets, total = shm.layout([10, 0, 100, 64])
    assert offsets == [0, 64, 64, 192]
    assert total == 256
    assert shm.layout([]) == ([], 0)


def test_host_id_is_stable_and_differs_by_shm_root(tmp_path: Path) -> None:
    assert shm.host_id() == shm.host_id() != ""
    assert shm.host_id(tmp_path / "missing") == ""


def test_a_payload_round_trips_zero_copy_and_read_only(tmp_path: Path) -> None:
    a = area(tmp_path)
    value = {"x": np.arange(1_000_000, dtype=np.float64), "y": np.ones((3, 5), dtype=np.int8), "s": "text"}
    payload, _ = dumps(value, allow_pickle=False)
    path = a.new_path()
    old = os.umask(0o277)  # whatever the umask, the file is 0600
    try:
        sizes = shm.write_file(path, payload)
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    ref = shm.parse_ref(shm.ShmRef(path.name, payload.blob, sizes).to_wire(), a.tag, "n1")
    got = loads(shm.open_ref(a.dir, ref), allow_pickle=False)
    assert not path.exists()  # unlinked once mapped
    np.testing.assert_array_equal(got["x"], value["x"])
    np.testing.assert_array_equal(got["y"], value["y"])
    assert got["s"] == "text"
    assert not got["x"].flags.writeable
    assert got["x"].ctypes.data % shm.ALIGN == 0
    base = got["x"].base
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview)
    assert type(base.obj).__name__ == "mmap"


def test_new_paths_are_unguessable_and_never_reused(tmp_path: Path) -> None:
    a = area(tmp_path)
    paths = {a.new_path() for _ in range(1000)}
    assert len(paths) == 1000
    p = next(iter(paths))
    shm.write_file(p, dumps(np.zeros(10), allow_pickle=False)[0])
    with pytest.raises(FileExistsError):  # O_EXCL: an existing file (or a planted link) is never written through
        shm.write_file(p, dumps(np.zeros(10), allow_pickle=False)[0])


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("x", "must be a map"),
        ({"name": "a", "blob": b""}, "must be a map"),
        ({"name": 1, "blob": b"", "sizes": []}, "name \\(str\\)"),
        ({"name": f"{TAG}.n1.{'0' * 8}.{'0' * 32}", "blob": b"", "sizes": [-1]}, "byte counts"),
        ({"name": f"{TAG}.n1.{'0' * 8}.{'0' * 32}", "blob": b"", "sizes": [True]}, "byte counts"),
        ({"name": f"../{TAG}.n1.{'0' * 8}.{'0' * 32}", "blob": b"", "sizes": []}, "not a shared-memory file"),
        ({"name": f"{shm.mesh_tag('other')}.n1.{'0' * 8}.{'0' * 32}", "blob": b"", "sizes": []}, "of this mesh"),
        ({"name": f"{TAG}.n2.{'0' * 8}.{'0' * 32}", "blob": b"", "sizes": []}, "made by its sender"),
        ({"name": f"{TAG}.n1.{'0' * 8}.lock", "blob": b"", "sizes": []}, "not a shared-memory file"),
    ],
)
def test_parse_ref_refuses_what_is_not_a_file_of_this_mesh_from_its_sender(raw: object, why: str) -> None:
    with pytest.raises(WireError, match=why):
        shm.parse_ref(raw, TAG, "n1")


def _written(a: shm.ShmArea) -> tuple[Path, shm.ShmRef]:
    payload, _ = dumps(np.arange(1000), allow_pickle=False)
    path = a.new_path()
    sizes = shm.write_file(path, payload)
    return path, shm.ShmRef(path.name, payload.blob, sizes)


def test_a_file_with_another_mode_is_refused_and_left_alone(tmp_path: Path) -> None:
    a = area(tmp_path)
    path, ref = _written(a)
    os.chmod(path, 0o644)
    with pytest.raises(shm.ShmError, match=r"refused .*: mode 0644, not 0600"):
        shm.open_ref(a.dir, ref)
    assert path.exists()  # not ours to remove: its holder's claim timeout does


@pytest.mark.skipif(os.getuid() != 0, reason="only root can give a file away")
def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    a = area(tmp_path)
    path, ref = _written(a)
    os.chown(path, 65534, 65534)
    with pytest.raises(shm.ShmError, match=r"owned by uid 65534, not 0"):
        shm.open_ref(a.dir, ref)


def test_a_symlink_or_a_file_of_another_size_is_refused(tmp_path: Path) -> None:
    a = area(tmp_path)
    path, ref = _written(a)
    target = tmp_path / "elsewhere"
    path.rename(target)
    path.symlink_to(target)
    with pytest.raises(shm.ShmError, match="cannot open"):
        shm.open_ref(a.dir, ref)
    path.unlink()
    target.rename(path)
    with open(path, "ab") as fh:
        fh.write(b"more")
    with pytest.raises(shm.ShmError, match="bytes, not the announced"):
        shm.open_ref(a.dir, ref)


def test_check_file_accepts_only_a_private_regular_file_of_the_size() -> None:
    st = os.stat_result((0o100600, 0, 0, 1, 7, 7, 10, 0, 0, 0))
    shm.check_file(st, 10, 7)
    with pytest.raises(shm.ShmError, match="regular"):
        shm.check_file(os.stat_result((0o040700, 0, 0, 1, 7, 7, 10, 0, 0, 0)), 10, 7)


def test_unclaimed_files_expire_claimed_ones_are_forgotten(tmp_path: Path) -> None:
    a = area(tmp_path)
    p1, _ = _written(a)
    p2, ref2 = _written(a)
    p3, _ = _written(a)
    a.track(p1.name, "r1", 1, now=0.0)
    a.track(p2.name, "r1", 2, now=0.0)
    a.track(p3.name, "r2", 3, now=5.0)
    shm.open_ref(a.dir, ref2)  # claimed
    a.tick(1.0, timeout=2.0)
    assert set(a.pending) == {p1.name, p3.name}
    a.tick(3.0, timeout=2.0)
    assert set(a.pending) == {p3.name}
    assert not p1.exists()
    assert a.expired == 1
    a.receiver_gone("r2")
    assert not p3.exists()
    assert a.pending == {}
    p4, _ = _written(a)
    a.track(p4.name, "r3", 9, now=10.0)
    a.asked_again("r3", 8)
    assert p4.exists()
    a.asked_again("r3", 9)  # the receiver refused it and asks over the socket
    assert not p4.exists()


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from meshaios.store import shm
    from meshaios.wire.values import dumps
    a = shm.ShmArea("mesh-a", "dead1", root=Path(sys.argv[1]))
    assert a.open()
    shm.write_file(a.new_path(), dumps(np.zeros(100), allow_pickle=False)[0])
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_files_of_a_killed_node_are_swept_by_a_live_one_and_nobody_elses(tmp_path: Path) -> None:
    live = area(tmp_path, node="live1")
    mine, _ = _written(live)
    other_mesh = area(tmp_path, node="o1", mesh="mesh-b")
    theirs, _ = _written(other_mesh)
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        dead_files = [n for n in os.listdir(live.dir) if ".dead1." in n]
        assert len(dead_files) == 2  # its data file and its lock
        assert shm.sweep(live.dir, live.tag, live.me) == 0  # alive: its lock is held
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    starting = area(tmp_path, node="new1")  # a node of the mesh that starts sweeps at once
    assert starting.swept == 1
    assert not [n for n in os.listdir(live.dir) if ".dead1." in n]
    assert shm.sweep(live.dir, live.tag, live.me) == 0
    assert mine.exists()  # a live node's file
    assert theirs.exists()  # another mesh's file
    live.close()  # a node that stops leaves nothing of its own, claimed or not, tracked or not
    assert not list(live.dir.glob(f"{live.tag}.live1.*"))


def test_two_processes_with_one_id_keep_apart(tmp_path: Path) -> None:
    """Tests seed their ids: two areas with the same mesh and id (two processes) never take each other's files."""
    a, b = area(tmp_path, node="same"), area(tmp_path, node="same")
    pa, _ = _written(a)
    pb, _ = _written(b)
    assert shm.sweep(a.dir, a.tag, a.me) == 0  # b is alive
    b.close()
    assert pa.exists()
    assert not pb.exists()
    assert [n for n in os.listdir(a.dir) if n.endswith(".lock")] == [f"{a.prefix}.lock"]


def test_a_directory_of_another_user_or_open_to_others_turns_shm_off(tmp_path: Path) -> None:
    d = shm.user_dir(tmp_path)
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    assert not shm.ShmArea("m", "n", root=tmp_path).open()
    os.chmod(d, 0o700)
    assert shm.ShmArea("m", "n", root=tmp_path).open()


def test_a_mapped_object_spills_and_reads_back_like_any_other(tmp_path: Path) -> None:
    from meshaios.store.objects import ObjectStore

    a = area(tmp_path)
    value = np.arange(200_000, dtype=np.float64)  # 1.6 MB
    payload, _ = dumps(value, allow_pickle=False)
    path = a.new_path()
    mapped = shm.open_ref(a.dir, shm.ShmRef(path.name, payload.blob, shm.write_file(path, payload)))
    store = ObjectStore(2 << 20, tmp_path / "spill")
    store.put("mapped", mapped)
    assert store.stats.bytes_in_memory == mapped.nbytes  # counted like any fetched copy
    store.put("other", dumps(np.ones(200_000), allow_pickle=False)[0])  # over the limit: the older one spills
    assert store.on_disk("mapped")
    del mapped
    back = store.get("mapped")
    assert back is not None
    np.testing.assert_array_equal(loads(back, allow_pickle=False), value)
    assert store.delete("mapped")
