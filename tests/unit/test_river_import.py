"""``meshaios.sched.river_import``: the runtime model's river import leaves ``river.proba`` (and ``scipy.stats``
under it) unloaded until something uses it, and then it works as it always does, from any number of threads."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def test_a_node_imports_the_model_without_scipy_stats_and_the_model_learns() -> None:
    out = _run("""
        import sys
        import meshaios.node
        from meshaios.sched.model import RuntimeModel, task_features
        m = RuntimeModel()
        x = task_features("k", nbytes=8_000_000, device="cpu")
        for _ in range(30):
            m.learn_one(x, 2.0)
        print(round(m.predict_one(x), 1), "scipy.stats" in sys.modules, "river.proba.gaussian" in sys.modules)
    """)
    assert out == "2.0 False False"


def test_river_proba_loads_on_first_use_from_many_threads_at_once() -> None:
    out = _run("""
        import sys, threading
        import meshaios.sched.model
        from river import linear_model
        import river.proba
        stand_in = sys.modules["river.proba"]
        barrier = threading.Barrier(8)
        got = []
        def first_touch():
            barrier.wait()
            got.append(river.proba.Gaussian)
        threads = [threading.Thread(target=first_touch) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        real = sys.modules["river.proba"]
        m = linear_model.BayesianLinearRegression()  # the river model that needs it, through the stand-in
        m.learn_one({"a": 1.0}, 2.0)
        dist = m.predict_one({"a": 1.0}, with_dist=True)
        print(len(got), len(set(got)), real is not stand_in, river.proba is real, type(dist).__name__,
              "scipy.stats" in sys.modules)
    """)
    assert out == "8 1 True True Gaussian True"
