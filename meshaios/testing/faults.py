"""Fault injection on the in-process mesh on virtual time: the production ``Node`` (its asyncio shell, the owner,
the executing node's core, SWIM, stealing) and ``AsyncClient``, many seeds a minute.

``run_seed(seed)`` draws a mesh (3-5 nodes, 1-2 workers each), a client (its tasks owned by 1-4 nodes), a
workload (independent squares, then a tree of sums over them; with ``shuffle``, a word count by MapReduce too, its
map outputs pulled peer to peer in parts, with or without a combiner) and faults at random times while it runs: kills
(the entry node too), pauses (every message to and from a node held, then delivered late), partitions, message
loss and links that race; with ``gray``, also one fault that makes the client fail over from an owner that stays
alive (the client cut off from it, or the node paused past the client's heartbeat timeout), and reads of the put
and of earlier results again once that owner has released what it held for the silent client. It returns what
went wrong, in words; ``check`` is what a user relies on:

* every future gets its result, the right one, exactly once (a future failing with an error the workload did not
  raise is a violation too) (the client drops late duplicates; it never sees
  one), within a bound of virtual time (no future waits forever);
* once the client has closed and the mesh has drained (checked every ``DRAIN`` virtual seconds, until
  ``MAX_DRAIN``: a message lost on its way may leave work that only a timeout cleans up), no live node holds
  anything for a task: no owned task, no queued or running attempt, no input reference, no stored object, no
  steal in progress.

``python -m meshaios.testing.faults --seeds 1000`` runs it from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from meshaios.client import AsyncClient, Future
from meshaios.errors import MeshError
from meshaios.testing.inproc import InProcessMesh
from meshaios.testing.vtime import run_virtual

WORDS = ("the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far")  # few words: keys repeat everywhere
RESULT_BOUND = 600.0  # virtual seconds within which every future must have its result
DRAIN = 10.0  # virtual seconds the mesh runs on after the client closed, before the leak check (and between checks)
MAX_DRAIN = 240.0  # the leak check's last try: past a fetch's timeouts (3 x 60 s) for an ABORT lost on its way


@dataclass
class FaultRun:
    seed: int
    nodes: int = 0
    tasks: int = 0
    faults: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    virtual_s: float = 0.0
    failovers: int = 0  # of the client's owners (shards)

    def describe(self) -> str:
        head = (f"seed {self.seed}: {self.nodes} nodes, {self.tasks} tasks, {self.failovers} failovers, "
                f"{self.virtual_s:.1f} virtual s")  # fmt: skip
        return "; ".join([head, "faults: " + (", ".join(self.faults) or "none"), *self.violations])


def _tree(c: AsyncClient, leaves: list[Future]) -> Future:
    level = leaves
    while len(level) > 1:
        nxt = [c.submit(operator.add, level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = nxt + ([level[-1]] if len(level) % 2 else [])
    return level[0]


def _words(doc: list[str]) -> list[tuple[str, int]]:
    """The word count's mapper: one pair per word."""
    return [(w, 1) for w in doc]


def _add(key: str, counts: list[int]) -> int:
    """Its reducer, and its combiner where drawn."""
    return sum(counts)


def _plan(rng: random.Random, n: int) -> list[tuple[float, str, int, float]]:
    """(when, what, node, how long) for 1-3 faults in the first virtual second; at least two nodes survive."""
    faults: list[tuple[float, str, int, float]] = []
    kills = 0
    for _ in range(rng.randint(1, 3)):
        what = rng.choice(("kill", "kill", "pause", "partition"))
        node = rng.randrange(n)
        if what == "kill":
            if kills >= n - 2 or any(f[1] == "kill" and f[2] == node for f in faults):
                what = "pause"
            else:
                kills += 1
        faults.append((rng.uniform(0.0, 1.0), what, node, rng.choice((0.2, 1.0, 4.0))))
    return faults


def _gray_plan(rng: random.Random, n: int, killed: set[int]) -> tuple[float, str, int, float]:
    """(when, what, node, how long) of one fault that outlasts the client's heartbeat timeout (5 s) on a node that
    lives on (its entry node in half the seeds and whenever it can): the client cut off from it, or it paused."""
    alive = [i for i in range(n) if i not in killed]
    node = 0 if 0 in alive and rng.random() < 0.5 else rng.choice(alive)
    return rng.uniform(0.0, 1.0), rng.choice(("cut", "pause")), node, rng.choice((6.0, 10.0))


def _cut_client(mesh: InProcessMesh, c: AsyncClient, node: int) -> None:
    """Cut every connection of ``c`` (one per shard) off from node ``node``: their messages held, not lost (TCP
    rides out a cut; the client fails over if it outlasts its heartbeat timeout)."""
    idents = [f"client:c:{c.core.ident(sid)}" for sid in c.core.shards]
    mesh.hub.hold(idents, [mesh.nodes[node].address])


async def _scenario(seed: int, run: FaultRun, puts: bool, shuffle: bool, gray: bool = False) -> None:
    rng = random.Random(seed)
    n = run.nodes = rng.randint(3, 5)
    mesh = InProcessMesh(n, seed=seed, virtual=True, workers=rng.choice((1, 2)),
                         task_seconds=rng.choice((0.002, 0.01, 0.05)))  # fmt: skip
    if rng.random() < 0.5:
        mesh.hub.delay = (0.0, rng.choice((0.001, 0.01)))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with mesh:
        await mesh.wait_converged()
        c = await mesh.client(0, spread=rng.choice((1, 2, 4)))
        async with asyncio.timeout(10):  # a client that knows only its entry node has nowhere to fail over to
            while True:  # polled on virtual time: costs nothing
                if len(set(c.core.peers) - {mesh.nodes[0].address}) >= n - 1:
                    break
                await asyncio.sleep(0.05)
        leaves = rng.randint(8, 40)
        squares = [c.submit(operator.mul, i, i) for i in range(leaves)]
        total = _tree(c, squares)
        run.tasks = leaves + (leaves - 1)
        # in half the seeds a put (acknowledged once two nodes hold it) and tasks that read it
        data = list(range(rng.randint(1000, 50_000))) if rng.random() < 0.5 and puts else None
        readers: list[Future] = []
        picks = rng.sample(range(len(data)), 5) if data is not None else []
        ref: Future | None = None
        if data is not None:
            ref = await c.put(data)
            readers = [c.submit(operator.getitem, ref, i) for i in picks]
            run.tasks += len(readers)
        # a word count by MapReduce: drawn from a generator of its own, so the seed's faults stay those of before
        srng = random.Random(f"shuffle/{seed}")
        docs = [[srng.choice(WORDS) for _ in range(srng.randint(5, 40))] for _ in range(srng.randint(3, 12))]
        reducers = (
            c.mapreduce(_words, _add, docs, partitions=srng.choice((2, 3, 5)), combiner=srng.choice((None, _add)))
            if shuffle else []
        )  # fmt: skip
        run.tasks += len(docs) + len(reducers) if shuffle else 0
        loss = rng.choice((0.0, 0.0, 0.005, 0.02))
        if loss:
            mesh.hub.drop_rate = loss
            run.faults.append(f"loss {loss}")
        plan = _plan(rng, n)
        if gray:  # drawn from a generator of its own: the seed's other faults stay those of before
            plan.append(_gray_plan(random.Random(f"gray/{seed}"), n, {f[2] for f in plan if f[1] == "kill"}))
        for at, what, node, length in plan:
            run.faults.append(f"{what} n{node} at {at:.2f}s" + ("" if what == "kill" else f" for {length}s"))
            if what == "kill":
                loop.call_later(at, mesh.kill, node)
            elif what == "pause":
                loop.call_later(at, mesh.pause, node)
                loop.call_later(at + length, mesh.resume, node)
            elif what == "cut":
                loop.call_later(at, _cut_client, mesh, c, node)
                loop.call_later(at + length, mesh.hub.unhold)
            else:
                others = [i for i in range(n) if i != node]
                loop.call_later(at, mesh.partition, [node], others)
                loop.call_later(at + length, mesh.heal)
        try:
            async with asyncio.timeout(RESULT_BOUND):
                got = await c.gather([*squares, total])
                read = await asyncio.gather(*(_outcome(f) for f in readers))
                counted = await asyncio.gather(*(_outcome(f, why=True) for f in reducers))
                if gray:
                    # past the memory lease of the owner the client left: it has released what it held for the
                    # client, and the owner it failed over to counts the copies (the put's, claimed)
                    await asyncio.sleep(mesh.nodes[0].holders.lease + DRAIN)
                    got.append(await c.submit(sum, squares[: leaves // 2]))
                    if ref is not None:
                        read += await asyncio.gather(*(_outcome(c.submit(operator.getitem, ref, i)) for i in picks))
                    picks += picks
        except TimeoutError:
            undone = sum(not f.done() for f in [*squares, total, *readers, *reducers])
            run.violations.append(f"{undone} futures without a result after {RESULT_BOUND:.0f} virtual s")
            got = None
        if got is not None:
            words: dict[str, int] = {}
            for ok, part in counted:
                if not ok:
                    run.violations.append(f"a reducer failed: {part}")
                elif not isinstance(part, dict) or list(part) != sorted(part) or set(part) & set(words):
                    run.violations.append(f"a reducer returned {part!r}")
                else:
                    words.update(part)
            want_words = dict(Counter(w for d in docs for w in d))
            if shuffle and all(ok for ok, _ in counted) and words != want_words:
                run.violations.append(f"the word count is {words}, not {want_words}")
            want = [i * i for i in range(leaves)] + [sum(i * i for i in range(leaves))]
            want += [sum(i * i for i in range(leaves // 2))] if gray else []
            wrong = [i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b]
            if wrong:
                run.violations.append(f"wrong results at {wrong[:5]}: {[got[i] for i in wrong[:5]]}")
            hits = sum(not f.startswith(("loss", "cut")) for f in run.faults)  # a cut-off node lives on for the mesh
            for i, (ok, value) in zip(picks, read, strict=True):
                # a put lives on two nodes: it is lost (its readers fail with ObjectLost) only if both are declared
                # dead -- killed, or paused or cut off long enough (SWIM's verdict is final for data without lineage)
                if ok and (data is None or value != data[i]):
                    run.violations.append(f"a reader of the put got {value!r}")
                elif not ok and not (hits >= 2 and value == "ObjectLost"):
                    run.violations.append(f"a reader of the put failed with {value} after {hits} fault(s)")
        run.failovers = c.core.failovers
        mesh.hub.drop_rate = 0.0  # the leak check: a healed mesh, what survived of it
        mesh.heal()
        mesh.hub.unhold()
        for i in range(n):
            mesh.resume(i)
        await c.close()
        drained = 0.0
        while True:  # what a lost message left behind is cleaned up by a timeout: at most MAX_DRAIN
            await asyncio.sleep(DRAIN)
            drained += DRAIN
            left = check(mesh)
            if not left or drained >= MAX_DRAIN:
                break
        run.violations.extend(left)
    run.virtual_s = loop.time() - t0


async def _outcome(f: Future, why: bool = False) -> tuple[bool, object]:
    """(True, its result) or (False, the name of the error it raised; ``why``: and its message)."""
    try:
        return True, await f
    except MeshError as exc:
        return False, f"{type(exc).__name__}: {str(exc)[:300]}" if why else type(exc).__name__


def check(mesh: InProcessMesh) -> list[str]:
    """What the live nodes of a drained mesh, whose clients have all gone, still hold for tasks."""
    bad: list[str] = []
    for i, node in enumerate(mesh.nodes):
        if mesh.transport(node).dead:
            continue
        held = {**node.core.held(), "owned tasks": len(node.owner.tasks), "stored objects": len(node.store.keys()),
                "running": sum(p.busy for p in (node._pool, *node._gpu_pools.values()) if p is not None)}  # fmt: skip
        bad.extend(f"n{i} leaks {what}: {count}" for what, count in held.items() if count)
    return bad


def run_seed(seed: int, puts: bool = True, shuffle: bool = False, gray: bool = False) -> FaultRun:
    """One seed; ``puts``: in half the seeds the workload also puts data and reads it back; ``shuffle``: it also
    counts words by MapReduce; ``gray``: one more fault makes the client fail over from a live owner, and the put
    and earlier results are read again after that owner's memory lease."""
    run = FaultRun(seed)
    try:
        run_virtual(_scenario(seed, run, puts, shuffle, gray))
    except Exception as exc:  # a crash is a finding too, with its seed
        run.violations.append(f"raised {type(exc).__name__}: {exc}")
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--no-puts", action="store_true", help="no put and its readers in the workload")
    ap.add_argument("--shuffle", action="store_true", help="a MapReduce word count in the workload too")
    ap.add_argument("--gray", action="store_true",
                    help="one more fault per seed that makes the client fail over from a live owner (cut off from "
                         "it, or paused 6-10 s), and the data read again after its memory lease")  # fmt: skip
    args = ap.parse_args(argv)
    t0, failed = time.perf_counter(), 0
    kinds: dict[str, int] = dict.fromkeys(("kill", "pause", "partition", "cut", "loss"), 0)
    nodes = tasks = failovers = 0
    for seed in range(args.first, args.first + args.seeds):
        run = run_seed(seed, puts=not args.no_puts, shuffle=args.shuffle, gray=args.gray)
        if run.violations or args.verbose:
            sys.stdout.write(run.describe() + "\n")
        failed += bool(run.violations)
        nodes, tasks, failovers = nodes + run.nodes, tasks + run.tasks, failovers + run.failovers
        for f in run.faults:
            kinds[f.split()[0]] += 1
    drawn = ", ".join(f"{n} {k}" for k, n in kinds.items())
    sys.stdout.write(f"{args.seeds} seeds ({nodes} nodes, {tasks} tasks; faults: {drawn}; {failovers} failovers), "
                     f"{failed} with violations, "
                     f"{time.perf_counter() - t0:.1f} s\n")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
