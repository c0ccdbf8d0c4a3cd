"""One adapter per engine, all with the same small surface, so every workload is written once in ``run.py``.

An engine is a context manager that starts its processes on 127.0.0.1 and ends every one of them on exit, even
after an error. Workload methods take a ``timeout`` and raise if the engine does not finish in time.

Only the meshaios adapter should change when meshaios's API grows; the peers' adapters are written the way their
documentation recommends for each workload.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import benchtasks as bt

from meshaios.testing.managed import Managed

log = logging.getLogger("bench")


class Engine(Managed):
    """Base: the surface ``run.py`` uses. ``size`` is the node / worker / CPU count."""

    name = "?"

    def __init__(self, size: int) -> None:
        self.size = size

    @property
    def label(self) -> str:
        return f"{self.name}[{self.size}]"

    def worker_pids(self) -> list[int]:
        """The processes that run tasks (meshaios nodes, Dask workers, Ray workers): sampled for peak RSS."""
        raise NotImplementedError

    def noop(self, n: int, timeout: float) -> None:
        """``n`` no-op tasks submitted at once from this client, waited for."""
        raise NotImplementedError

    def tiny(self, i: int, timeout: float) -> None:
        """One tiny task, submit -> result."""
        raise NotImplementedError

    def shuffle_inputs(self, length: int, timeout: float) -> Any:
        """The 16 input partitions, materialised where the engine keeps data, before the clock starts."""
        raise NotImplementedError

    def shuffle(self, inputs: Any, timeout: float) -> list[tuple[int, int]]:
        raise NotImplementedError

    def dag_inputs(self, length: int, timeout: float) -> Any:
        raise NotImplementedError

    def dag(self, inputs: Any, timeout: float) -> Any:
        raise NotImplementedError

    def wordcount_inputs(self, part_bytes: int, timeout: float) -> Any:
        """The 16 partitions of the text corpus (lists of lines), materialised on the workers before the clock."""
        raise NotImplementedError

    def wordcount(self, inputs: Any, timeout: float) -> dict[str, int]:
        """Word frequencies of the whole corpus, as the engine's documentation recommends computing them."""
        raise NotImplementedError


# ---- meshaios ---------------------------------------------------------------------------------------------


class MeshaiosEngine(Engine):
    """``LocalMesh(size, workers=1)``: ``size`` real node processes, one task thread each; the client on node 0.

    ``insecure=False`` is what a user gets by default (a token: CurveZMQ encryption on every link).
    """

    def __init__(self, size: int, *, insecure: bool = False, shm: bool = True) -> None:
        super().__init__(size)
        self.insecure = insecure
        self.shm = shm
        self.name = "meshaios-plain" if insecure else "meshaios" if shm else "meshaios-noshm"
        self.mesh: Any = None
        self.client: Any = None

    def start(self) -> None:
        from meshaios.testing.localmesh import LocalMesh, wait_for

        # an insecure node runs only what its operator allowed: the benchmark's tasks, and operator.getitem
        allow = ["--allow-module", "benchtasks", "--allow-function", "_operator:getitem"] if self.insecure else []
        allow += [] if self.shm else ["--no-shm"]  # same-host transfers over the socket, as before issue 17 item 2
        self.mesh = LocalMesh(self.size, workers=1, discovery=False, insecure=self.insecure, extra_args=allow)
        self.mesh.__enter__()
        self.client = self.mesh.client(0)
        client = self.client

        def all_alive() -> bool:
            members = client.status()["members"]
            return sum(m["state"] == "alive" and m["id"] != client.node["node"] for m in members) >= self.size - 1

        wait_for(all_alive, timeout=30, what=f"{self.size} meshaios nodes alive")
        # the nodes owning the client's tasks (client.spread, $MESHAIOS_SPREAD): all open before the clock starts
        owners = min(client._async.spread, self.size)
        wait_for(lambda: len(client._async.core.shards) >= owners, timeout=30, what=f"{owners} owners")

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
            self.client = None
        if self.mesh is not None:
            self.mesh.close()
            self.mesh = None

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.mesh.procs]

    def timelines(self) -> dict[str, dict[str, Any]]:
        """Each node's task-timeline totals (``meshaios status``: ``node.timeline_summary``): where its task time
        went -- queued, fetching inputs, running -- and the input bytes it fetched."""
        out: dict[str, dict[str, Any]] = {}
        for p in self.mesh.procs:
            with contextlib.suppress(Exception), self.mesh.client(p.index, spread=1) as c:
                node = c.status()["node"]
                out[p.name] = dict(node.get("timeline_summary") or {})
                out[p.name]["shm_in"] = (node.get("shm") or {}).get("received_bytes", 0)
        return out

    def noop(self, n: int, timeout: float) -> None:
        self.client.gather(self.client.map(bt.noop, range(n)), timeout=timeout)

    def tiny(self, i: int, timeout: float) -> None:
        self.client.submit(bt.noop, i).result(timeout)

    def _wait(self, futs: list[Any], timeout: float) -> None:
        """Wait until the tasks are done without fetching their results: they stay in the nodes' stores."""
        for f in futs:
            exc = f.exception(timeout)
            if exc is not None:
                raise exc

    def shuffle_inputs(self, length: int, timeout: float) -> Any:
        futs = self.client.map(bt.make_partition, range(bt.NPARTS), [length] * bt.NPARTS)
        self._wait(futs, timeout)
        return futs

    def shuffle(self, inputs: Any, timeout: float) -> list[tuple[int, int]]:
        # The data plane's shuffle: each map task hash-partitions its input with meshaios's own kernel (the
        # same top-4-bits-of-x*0x9E3779B97F4A7C15 buckets as benchtasks.bucket) and its node keeps the 16 parts;
        # reducer j pulls part j of every map output peer to peer and gets them concatenated.
        reducers = self.client.shuffle(inputs, partitions=bt.NPARTS, reducer=bt.reduce_array)
        return [tuple(r) for r in self.client.gather(reducers, timeout=timeout)]

    def dag_inputs(self, length: int, timeout: float) -> Any:
        futs = self.client.map(bt.make_array, range(bt.DAG_ARRAYS), [length] * bt.DAG_ARRAYS)
        self._wait(futs, timeout)
        return futs

    def dag(self, inputs: Any, timeout: float) -> Any:
        return _dag(self.client.submit, inputs).result(timeout)

    def wordcount_inputs(self, part_bytes: int, timeout: float) -> Any:
        futs = self.client.map(bt.make_docs, range(bt.NPARTS), [part_bytes] * bt.NPARTS)
        self._wait(futs, timeout)
        return futs

    def wordcount(self, inputs: Any, timeout: float) -> dict[str, int]:
        # MapReduce: a Counter per partition (the map), hash-partitioned by word into 16 parts that stay on the
        # mapper's node, reducer j pulls part j of every map output peer to peer and sums per word
        outs = self.client.mapreduce(bt.count_words, bt.add_counts, inputs, partitions=bt.NPARTS)
        return _merge(self.client.gather(outs, timeout=timeout))

    def wordcount_pairs(self, inputs: Any, timeout: float) -> dict[str, int]:
        """The textbook form: ``(word, 1)`` pairs, summed map-side by a combiner before the shuffle."""
        outs = self.client.mapreduce(bt.word_pairs, bt.add_counts, inputs, partitions=bt.NPARTS, combiner=bt.add_counts)
        return _merge(self.client.gather(outs, timeout=timeout))


def _merge(parts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in parts:
        out.update(p)
    return out


def _dag(submit: Callable[..., Any], xs: list[Any]) -> Any:
    """The DAG of ``benchtasks``, built with any ``submit(fn, *args)`` that accepts futures as arguments."""
    n = bt.DAG_ARRAYS
    gs = [submit(bt.project, submit(bt.mix, submit(bt.scale, xs[k]), xs[(k + 1) % n])) for k in range(n)]
    return submit(bt.summary, submit(bt.add, gs[0], gs[1]), submit(bt.add, gs[2], gs[3]))


# ---- Dask distributed -------------------------------------------------------------------------------------


class DaskEngine(Engine):
    """``LocalCluster`` of ``size`` worker processes, one thread each; ``tuned`` turns scheduler queuing off
    (``distributed.scheduler.worker-saturation: inf``), the setting Dask recommends for many small tasks."""

    def __init__(self, size: int, *, tuned: bool = False) -> None:
        super().__init__(size)
        self.tuned = tuned
        self.name = "dask-tuned" if tuned else "dask"
        self.cluster: Any = None
        self.client: Any = None
        self._config: Any = None

    def start(self) -> None:
        import dask
        from distributed import Client, LocalCluster

        settings: dict[str, Any] = {"distributed.scheduler.worker-saturation": float("inf")} if self.tuned else {}
        self._config = dask.config.set(settings)
        self._config.__enter__()
        self.cluster = LocalCluster(
            n_workers=self.size,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        self.client = Client(self.cluster)
        self.client.wait_for_workers(self.size, timeout=60)
        self._pids = list(self.client.run(os.getpid).values())

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close(timeout=10)
            self.client = None
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close(timeout=20)
            self.cluster = None
        if self._config is not None:
            self._config.__exit__(None, None, None)
            self._config = None

    def worker_pids(self) -> list[int]:
        return list(self._pids)

    def _gather(self, futs: Any, timeout: float) -> Any:
        from distributed import wait

        wait(futs, timeout=timeout)
        return self.client.gather(futs)

    def noop(self, n: int, timeout: float) -> None:
        self._gather(self.client.map(bt.noop, range(n), pure=False), timeout)

    def tiny(self, i: int, timeout: float) -> None:
        self.client.submit(bt.noop, i, pure=False).result(timeout)

    def shuffle_inputs(self, length: int, timeout: float) -> Any:
        from distributed import wait

        futs = [self.client.submit(bt.make_partition, i, length, pure=False) for i in range(bt.NPARTS)]
        wait(futs, timeout=timeout)
        return futs

    def shuffle(self, inputs: Any, timeout: float) -> list[tuple[int, int]]:
        # explicit tasks: map -> one getitem task per (map output, reducer), run where the map output lives
        # (what dask.delayed(nout=16) builds) -> reducers
        submit = self.client.submit
        n = bt.NPARTS
        maps = [submit(bt.bucket, x, pure=False) for x in inputs]
        pieces = [[submit(operator.getitem, m, j, pure=False) for j in range(n)] for m in maps]
        reducers = [submit(bt.reduce_slices, *[pieces[i][j] for i in range(n)], pure=False) for j in range(n)]
        return [tuple(r) for r in self._gather(reducers, timeout)]

    def dag_inputs(self, length: int, timeout: float) -> Any:
        from distributed import wait

        futs = [self.client.submit(bt.make_array, k, length, pure=False) for k in range(bt.DAG_ARRAYS)]
        wait(futs, timeout=timeout)
        return futs

    def dag(self, inputs: Any, timeout: float) -> Any:
        def submit(fn: Callable[..., Any], *args: Any) -> Any:
            return self.client.submit(fn, *args, pure=False)

        return _dag(submit, inputs).result(timeout)

    def wordcount_inputs(self, part_bytes: int, timeout: float) -> Any:
        from distributed import wait

        futs = [self.client.submit(bt.make_docs, i, part_bytes, pure=False) for i in range(bt.NPARTS)]
        wait(futs, timeout=timeout)
        return futs

    def wordcount(self, inputs: Any, timeout: float) -> dict[str, int]:
        # Dask's documented word count: a bag of lines, split, flattened, ``frequencies()`` (a per-partition
        # count and a tree reduction of the counts)
        import dask.bag as db
        from dask import delayed

        bag = db.from_delayed([delayed(f) for f in inputs])
        freqs = self.client.compute(bag.str.split().flatten().frequencies())
        return dict(freqs.result(timeout))


# ---- Ray --------------------------------------------------------------------------------------------------


class RayEngine(Engine):
    """``ray.init(num_cpus=size)``: a local Ray node, no dashboard, default (1 CPU) tasks, object store in shm."""

    name = "ray"

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.ray: Any = None
        self.fns: dict[str, Any] = {}
        self._tmp: str | None = None

    def start(self) -> None:
        import ray

        self.ray = ray
        self._tmp = tempfile.mkdtemp(prefix="ray")  # session logs, sockets, spill files; removed on close
        ray.init(
            _temp_dir=self._tmp,
            num_cpus=self.size,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        r = ray.remote
        self.fns = {
            "noop": r(bt.noop),
            "make_partition": r(bt.make_partition),
            "bucket": r(num_returns=bt.NPARTS)(bt.bucket),
            "reduce_slices": r(bt.reduce_slices),
            "make_array": r(bt.make_array),
            **{f.__name__: r(f) for f in (bt.scale, bt.mix, bt.project, bt.add, bt.summary)},
        }
        self.noop(4 * self.size, timeout=60)  # workers up before anything is timed

    def close(self) -> None:
        if self.ray is not None:
            with contextlib.suppress(Exception):
                self.ray.shutdown()
            self.ray = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def worker_pids(self) -> list[int]:
        """Ray's worker processes: the raylet's children titled ``ray::<task>`` / ``ray::IDLE`` (not its agents)."""
        import psutil

        pids = []
        for p in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                name = p.name()
                if name.startswith("ray::") and "Agent" not in name:
                    pids.append(p.pid)
        return pids

    def noop(self, n: int, timeout: float) -> None:
        f = self.fns["noop"]
        self.ray.get([f.remote(i) for i in range(n)], timeout=timeout)

    def tiny(self, i: int, timeout: float) -> None:
        self.ray.get(self.fns["noop"].remote(i), timeout=timeout)

    def shuffle_inputs(self, length: int, timeout: float) -> Any:
        f = self.fns["make_partition"]
        refs = [f.remote(i, length) for i in range(bt.NPARTS)]
        self.ray.wait(refs, num_returns=len(refs), timeout=timeout, fetch_local=False)
        return refs

    def shuffle(self, inputs: Any, timeout: float) -> list[tuple[int, int]]:
        n = bt.NPARTS
        pieces = [self.fns["bucket"].remote(x) for x in inputs]  # 16 object refs per map task
        red = self.fns["reduce_slices"]
        reducers = [red.remote(*[pieces[i][j] for i in range(n)]) for j in range(n)]
        return [tuple(r) for r in self.ray.get(reducers, timeout=timeout)]

    def dag_inputs(self, length: int, timeout: float) -> Any:
        f = self.fns["make_array"]
        refs = [f.remote(k, length) for k in range(bt.DAG_ARRAYS)]
        self.ray.wait(refs, num_returns=len(refs), timeout=timeout, fetch_local=False)
        return refs

    def dag(self, inputs: Any, timeout: float) -> Any:
        def submit(fn: Callable[..., Any], *args: Any) -> Any:
            return self.fns[fn.__name__].remote(*args)

        return self.ray.get(_dag(submit, inputs), timeout=timeout)


ENGINES: dict[str, Callable[[int], Engine]] = {
    "meshaios": MeshaiosEngine,
    "meshaios-plain": lambda n: MeshaiosEngine(n, insecure=True),
    "meshaios-noshm": lambda n: MeshaiosEngine(n, shm=False),
    "dask": DaskEngine,
    "dask-tuned": lambda n: DaskEngine(n, tuned=True),
    "ray": RayEngine,
}
