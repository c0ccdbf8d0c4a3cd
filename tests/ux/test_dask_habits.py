"""What a Dask user types on day one, on the session's real 3-node mesh: ``scatter``, ``wait``,
``dashboard_link``."""

from __future__ import annotations

import urllib.request

import numpy as np

from meshaios.client import Client
from tests.ux import funcs


def test_scatter_a_list_a_dict_and_one_array(client: Client) -> None:
    xs = client.scatter([1, 2, 3])
    assert [client.submit(funcs.square, x).result(timeout=60) for x in xs] == [1, 4, 9]
    d = client.scatter({"a": 5, "b": 6})
    assert sorted(d) == ["a", "b"]
    assert client.submit(funcs.add, d["a"], d["b"]).result(timeout=60) == 11
    arr = client.scatter(np.arange(10))  # one value, not ten
    assert client.submit(np.sum, arr).result(timeout=60) == 45


def test_wait_returns_done_and_not_done(client: Client) -> None:
    futs = client.map(funcs.square, range(5))
    done, not_done = client.wait(futs, timeout=60)
    assert not not_done
    assert done == set(futs)
    one = client.submit(funcs.square, 7)
    done, _ = client.wait(one, timeout=60)
    assert done == {one}


def test_dashboard_link_serves_the_dashboard(client: Client) -> None:
    link = client.dashboard_link
    assert link.startswith("http://")
    with urllib.request.urlopen(link, timeout=30) as r:
        assert r.status == 200
        assert b"meshaios" in r.read()
