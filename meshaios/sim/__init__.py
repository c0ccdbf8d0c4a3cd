"""Discrete-event simulation of a mesh: the real owner, placement, runtime model, load view, stealing and SWIM code
on a virtual clock, with simulated executors and links (``engine.py``), synthetic clusters and workloads
(``workloads.py``), offline HEFT references (``heft.py``) and the ``meshaios sim`` command (``cli.py``)."""
