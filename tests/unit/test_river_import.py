"""``meshaios.sched.river_import``: the runtime model's river import leaves ``river.proba`` (and ``scipy.stats``
under it) and ``scipy.special`` unloaded until something uses them, and then they work as they always do, from any
number of threads."""

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
        print(round(m.predict_one(x), 1), "scipy.stats" in sys.modules, "river.proba.gaussian" in sys.modules,
              "scipy.special._ufuncs" in sys.modules)
    """)
    assert out == "2.0 False False False"


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


def test_scipy_special_loads_on_first_use_and_river_gets_its_ndtri_late() -> None:
    """river's AdPredictor takes ``ndtri`` from ``scipy.special`` as it loads: it gets a function that loads
    ``scipy.special`` when called; an import of ``ndtri`` after river's gets numpy's ufunc itself, and a submodule
    of ``scipy.special`` imports while the stand-in is in place."""
    out = _run("""
        import sys
        import meshaios.sched.model
        from river import linear_model
        before = "scipy.special._ufuncs" in sys.modules
        import scipy.special._logsumexp  # a submodule, through the stand-in's __path__
        m = linear_model.AdPredictor()
        m.learn_one({"a": 1.0}, True)
        from scipy.special import ndtri
        import scipy, scipy.special
        print(before, m.predict_one({"a": 1.0}), type(ndtri).__name__, scipy.special is sys.modules["scipy.special"],
              round(float(scipy.special.expit(0.0)), 2))
    """)
    assert out == "False True ufunc True 0.5"

