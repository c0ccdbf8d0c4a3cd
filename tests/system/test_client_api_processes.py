"""The client's smaller promises, with real node processes: clear errors after close(), ``TaskError.cause``
through dependency failures, and ``gather(errors="skip")``."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from meshaios import AsyncClient, Client, MeshUnavailable, TaskError
from meshaios.testing.localmesh import LocalMesh, wait_for
from tests.integration import funcs

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalMesh]:
    with LocalMesh(2, discovery=False, startup_timeout=60) as m:
        yield m


@pytest.fixture(scope="module")
def client(mesh: LocalMesh) -> Iterator[Client]:
    with mesh.client(0) as c:
        wait_for(lambda: len(c.status()["members"]) == 1, timeout=15, what="two nodes")
        yield c


def test_every_call_after_close_raises_mesh_unavailable_and_leaves_no_coroutine(mesh: LocalMesh) -> None:
    c = mesh.client(0)
    big = c.submit(funcs.make_array, 100_000, 1)  # 800 KB: stays on its node, fetched only on result()
    assert big.exception(timeout=30) is None
    small = c.submit(funcs.square, 3)
    assert small.result(timeout=30) == 9
    c.close()
    calls: dict[str, Callable[[], Any]] = {
        "put": lambda: c.put(b"x"),
        "status": lambda: c.status(),
        "ping": lambda: c.ping(),
        "mapreduce": lambda: c.mapreduce(funcs.doc_pairs, funcs.sum_values, [1, 2]),
        "shuffle": lambda: c.shuffle([{"a": 1}]),
        "submit": lambda: c.submit(funcs.square, 2),
        "map": lambda: c.map(funcs.square, [1, 2]),
        "large result": lambda: big.result(timeout=5),
        "executor": lambda: c.executor().submit(funcs.square, 2),
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, call in calls.items():
            with pytest.raises(MeshUnavailable, match="client is closed") as info:
                call()
            assert info.type is MeshUnavailable, name
            gc.collect()
        c.close()  # a second close is a no-op
        gc.collect()
    assert small.result() == 9  # what had arrived before close stays readable
    assert not [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_async_calls_after_close_raise_mesh_unavailable(mesh: LocalMesh) -> None:
    async def main() -> None:
        async with AsyncClient(mesh.address(0), token=mesh.token) as ac:
            assert await ac.submit(funcs.square, 4) == 16
        for call in (ac.status(), ac.ping(), ac.put(1)):
            with pytest.raises(MeshUnavailable, match="client is closed"):
                await call
        with pytest.raises(MeshUnavailable, match="client is closed"):
            ac.mapreduce(funcs.doc_pairs, funcs.sum_values, [1])

    asyncio.run(main())


def test_a_dependency_failure_carries_the_original_exception_as_cause(client: Client) -> None:
    a = client.submit(funcs.boom, "the original")
    b = client.submit(funcs.identity, a)
    c = client.submit(funcs.add, b, 1)
    for fut, says in ((a, "ValueError: the original"), (b, f"dependency {a.key} failed"), (c, f"dependency {b.key}")):
        with pytest.raises(TaskError, match=says) as info:
            fut.result(timeout=30)
        assert isinstance(info.value.cause, ValueError)
        assert str(info.value.cause) == "the original"
        assert info.value.remote_type == "ValueError"
    late = client.submit(funcs.identity, a)  # submitted on top of the failed task, after it failed
    with pytest.raises(TaskError) as info:
        late.result(timeout=30)
    assert isinstance(info.value.cause, ValueError)


def test_gather_raises_or_skips_failed_tasks(client: Client) -> None:
    futs = [client.submit(funcs.square, 2), client.submit(funcs.boom, "bad"), client.submit(funcs.square, 3)]
    dep = client.submit(funcs.identity, futs[1])  # fails through its dependency
    with pytest.raises(TaskError, match="bad"):
        client.gather([*futs, dep], timeout=30)
    assert client.gather([*futs, dep], timeout=30, errors="skip") == [4, 9]
    with pytest.raises(ValueError, match="errors must be 'raise' or 'skip'"):
        client.gather(futs, errors="ignore")
    big = client.submit(funcs.make_array, 100_000, 2)  # a large result, fetched by gather from its node
    [got] = client.gather([client.submit(funcs.boom, "x"), big], errors="skip", timeout=30)
    assert np.array_equal(got, funcs.make_array(100_000, 2))


def test_async_gather_skips_failed_tasks(mesh: LocalMesh) -> None:
    async def main() -> None:
        async with AsyncClient(mesh.address(0), token=mesh.token) as ac:
            futs = [ac.submit(funcs.square, 5), ac.submit(funcs.boom, "bad"), ac.submit(funcs.square, 6)]
            assert await ac.gather(futs, errors="skip") == [25, 36]
            with pytest.raises(TaskError, match="bad"):
                await ac.gather(futs)

    asyncio.run(main())
